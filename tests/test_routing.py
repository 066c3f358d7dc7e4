"""Session keys from ``user``: always header-safe, and distinct users stay distinct;
reserved namespaces, ``sessions.userKeys``; the ``x-openclaw-model`` override."""

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
from chatcompat.routing import model_override
from chatcompat.routing import session_key
from chatcompat.settings import AgentConfig


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


# -- reserved namespaces and sessions.userKeys (issue 13) ---------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "subagent:x",
        "CRON:nightly",
        "acp:client",
        "agent:main:subagent:spoofed",
        "agent:MAIN:Cron:job",
        "agent:main:acp:1",
    ],
)
def test_a_header_key_in_a_reserved_namespace_is_refused(header):
    with pytest.raises(errors.ReservedSessionKey) as caught:
        session_key("main", header, None)
    assert caught.value.param == "x-openclaw-session-key"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("my-subagent:x", "agent:main:my-subagent:x"),  # only right after the prefix
        ("agent:main:openai:custom", "agent:main:openai:custom"),
        ("agent:main:chat:cron:x", "agent:main:chat:cron:x"),
    ],
)
def test_keys_that_only_mention_a_namespace_are_used(header, key):
    assert session_key("main", header, None) == (key, True)


def test_without_user_keys_user_selects_no_session():
    key, sticky = session_key("main", None, "alice", user_keys=False)
    assert key.startswith("agent:main:openai:") and not sticky
    assert session_key("main", None, "alice", user_keys=False)[0] != key
    # The header still selects one.
    assert session_key("main", "k", "alice", user_keys=False) == ("agent:main:k", True)


# -- x-openclaw-model (issue 13) -----------------------------------------------------------

LISTED = AgentConfig(id="up", backend="openai", models=("gpt-4o-mini", "vendor/big"))


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_model_header_keeps_the_agents_own_model(header):
    assert model_override(LISTED, header) is None
    assert model_override(AgentConfig(id="x", backend="echo"), header) is None


def test_a_listed_model_is_chosen_exactly():
    assert model_override(LISTED, " vendor/big ") == "vendor/big"
    with pytest.raises(errors.ModelNotAllowed):
        model_override(LISTED, "GPT-4o-mini")  # model ids are case-sensitive upstream


def test_an_unlisted_model_is_400_naming_the_header_and_the_allowed_ones():
    with pytest.raises(errors.ModelNotAllowed) as caught:
        model_override(LISTED, "gpt-5")
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "model_not_allowed", "x-openclaw-model")
    assert "'gpt-5'" in error.message and "'gpt-4o-mini', 'vendor/big'" in error.message


def test_an_agent_without_models_allows_no_override():
    with pytest.raises(errors.ModelNotAllowed) as caught:
        model_override(AgentConfig(id="x", backend="echo"), "anything")
    assert "no 'models' configured" in caught.value.message


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
