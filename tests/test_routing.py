"""Session keys from ``user``: always header-safe, and distinct users stay distinct."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat.routing import MAX_SESSION_KEY_CHARS
from chatcompat.routing import header_safe
from chatcompat.routing import session_key


@pytest.mark.parametrize(
    ("user", "key"),
    [
        ("Alice", "agent:main:openai-user:alice"),  # as OpenClaw, unchanged
        ("bob smith", "agent:main:openai-user:bob smith"),
        ("100%", "agent:main:openai-user:100%"),  # printable ASCII: as before
        ("zoë", "agent:main:openai-user-enc:zo%C3%AB"),
        ("a\r\nb", "agent:main:openai-user-enc:a%0D%0Ab"),
        ("nul\x00", "agent:main:openai-user-enc:nul%00"),
        ("100% ë", "agent:main:openai-user-enc:100%25 %C3%AB"),
        ("日本", "agent:main:openai-user-enc:%E6%97%A5%E6%9C%AC"),
    ],
)
def test_user_keys_are_printable_ascii(user, key):
    assert session_key("main", None, user) == (key, True)


def test_a_literal_escape_and_the_character_it_spells_are_different_users():
    assert header_safe("zo%C3%AB") != header_safe("zoë")
    assert session_key("main", None, "zo%C3%AB") != session_key("main", None, "zoë")


def test_the_longest_key_from_a_user_can_be_sent_back():
    user = "\U0001f600" * 256  # the schema's longest user, four UTF-8 bytes each
    key, _ = session_key("a" * 64, None, user)
    assert len(key) <= MAX_SESSION_KEY_CHARS
    assert session_key("a" * 64, key, None) == (key, True)


@pytest.mark.parametrize("header", ["zoë", "a\tb", "x" * (MAX_SESSION_KEY_CHARS + 1)])
def test_a_header_key_outside_printable_ascii_is_refused_naming_the_header(header):
    with pytest.raises(errors.InvalidSessionKey) as caught:
        session_key("main", header, None)
    assert caught.value.param == "x-openclaw-session-key"
