"""Session keys from ``user``: always header-safe, and distinct users stay distinct."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat import routing
from chatcompat.errors import SessionNotFound
from chatcompat.principal import OPERATOR
from chatcompat.principal import Principal
from chatcompat.principal import session_key_owner
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


# -- named keys (SPEC 16.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "user", "expected"),
    [
        (None, "Alice", ("agent:main:key:web:openai-user:alice", True)),
        ("chat-1", None, ("agent:main:key:web:chat-1", True)),
        ("agent:main:key:web:chat-1", None, ("agent:main:key:web:chat-1", True)),
        ("AGENT:Main:key:web:chat-1", None, ("agent:main:key:web:chat-1", True)),
        ("key:other:x", None, ("agent:main:key:web:key:other:x", True)),
    ],
)
def test_a_named_keys_sessions_carry_its_id(header, user, expected):
    assert routing.key_session_key("web", "main", header, user) == expected


def test_a_named_keys_stateless_key_is_in_its_namespace():
    key, sticky = routing.key_session_key("web", "main", None, None)
    assert key.startswith("agent:main:key:web:openai:") and not sticky


@pytest.mark.parametrize(
    "header",
    [
        "agent:main:key:bot:chat-1",
        "agent:main:openai-user:alice",
        "agent:main:chat-1",
        "agent:main:key:webx:a",
    ],
)
def test_another_credentials_full_key_is_not_found(header):
    with pytest.raises(SessionNotFound):
        routing.key_session_key("web", "main", header, "alice")


def test_the_operators_keys_are_unchanged():
    assert routing.key_session_key(None, "main", None, "Bob") == session_key("main", None, "Bob")


def test_session_owner_reads_the_namespace():
    assert OPERATOR.owns_session("agent:main:key:web:x")
    web = Principal("web", False)
    assert web.owns_session("agent:main:key:web:x")
    assert not web.owns_session("agent:main:key:bot:x")
    assert not web.owns_session("agent:main:openai-user:web")
    assert session_key_owner("agent:main:key:web:openai-user:alice") == "web"
    assert session_key_owner("agent:main:openai-user:alice") is None
