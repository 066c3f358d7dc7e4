"""Which agent a request runs on, and which session it continues (SPEC 6 and 7)."""

from __future__ import annotations

import dataclasses
import re
import typing as t
import uuid

from .errors import InvalidSessionKey
from .errors import ModelNotAllowed
from .errors import ModelNotFound
from .errors import ReservedSessionKey
from .errors import SessionNotFound

if t.TYPE_CHECKING:
    from .settings import AgentConfig
    from .settings import Settings

AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MODEL_PREFIXES = ("openclaw/", "openclaw:", "agent:")
# The longest key the gateway returns (a 256-character ``user``, every character
# percent-encoded from four UTF-8 bytes, and its prefix) must be one a client can send back.
MAX_SESSION_KEY_CHARS = 4096
_PRINTABLE_ASCII = re.compile(rf"[\x20-\x7e]{{1,{MAX_SESSION_KEY_CHARS}}}")
# What an encoded user key carries as is: printable ASCII, except "%" (the escape).
_UNSAFE_IN_KEY = re.compile(r"[^\x20-\x24\x26-\x7e]")
HEADER = "x-openclaw-session-key"
MODEL_HEADER = "x-openclaw-model"
# OpenClaw's internal session namespaces, right after "agent:<id>:" (or at the start
# of a bare key, which lands there): its sub-agent, cron and ACP runs.
RESERVED_NAMESPACES = ("subagent:", "cron:", "acp:")
ACCEPTED_FORMS = (
    "'openclaw', 'openclaw/default', 'openclaw/<agentId>', 'openclaw:<agentId>', "
    "'agent:<agentId>' or '<agentId>'"
)


def resolve_agent(settings: Settings, header_agent: str | None, model: str | None) -> AgentConfig:
    """Pick the agent: header, then the model string, then the default agent.

    :raise ModelNotFound: for an unknown agent, or a model string naming none
        (ignored when the header names the agent).
    """
    if header_agent is not None and header_agent.strip():
        return _known_agent(settings, header_agent.strip().lower(), param=None)
    if model is None:
        return _default_agent(settings)
    agent_id = agent_id_from_model(model)
    if agent_id == "default":
        return _default_agent(settings)
    bare = not model.strip().lower().startswith(_MODEL_PREFIXES)
    if agent_id is None or (bare and settings.agent(agent_id) is None):
        # Most likely an upstream model name (gpt-4o...): say what this gateway takes.
        agents = ", ".join(f"'openclaw/{a.id}'" for a in settings.agents)
        shown = model if len(model) <= 64 else model[:61] + "..."
        raise ModelNotFound(
            f"The model {shown!r} does not exist. Use {ACCEPTED_FORMS}; configured: {agents}.",
            param="model",
        )
    return _known_agent(settings, agent_id, param="model")


def agent_id_from_model(model: str) -> str | None:
    """The agent id a model string names (``"default"`` for the default agent), or None.

    A bare string is returned as a candidate id; the caller checks it is configured.
    """
    name = model.strip().lower()
    if name in ("openclaw", "openclaw/default", "openclaw:default"):
        return "default"
    for prefix in _MODEL_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if AGENT_ID.fullmatch(name) else None


def _known_agent(settings: Settings, agent_id: str, param: str | None) -> AgentConfig:
    agent = settings.agent(agent_id) if AGENT_ID.fullmatch(agent_id) else None
    if agent is None:
        shown = agent_id if len(agent_id) <= 64 else agent_id[:61] + "..."
        raise ModelNotFound(
            f"Unknown agent {shown!r}. Configured agents: "
            + ", ".join(a.id for a in settings.agents)
            + ".",
            param=param,
        )
    return agent


def _default_agent(settings: Settings) -> AgentConfig:
    agent = settings.agent(settings.default_agent_id)
    assert agent is not None, "the configuration always has its default agent"
    return agent


def session_key(
    agent_id: str, header_key: str | None, user: str | None, *, user_keys: bool = True
) -> tuple[str, bool]:
    """Return ``(key, sticky)`` for this request.

    Header first (a bare key is scoped to the agent; a key scoped to another agent
    is refused), then ``user`` (unless ``user_keys`` is false: ``sessions.userKeys``),
    else a fresh stateless key.

    :raise InvalidSessionKey: for a malformed header or one scoped to another agent.
    :raise ReservedSessionKey: for a header key in one of OpenClaw's internal
        namespaces (:data:`RESERVED_NAMESPACES`).
    """
    if header_key is not None and header_key.strip():
        key = header_key.strip()
        if not _PRINTABLE_ASCII.fullmatch(key):
            raise InvalidSessionKey(
                f"x-openclaw-session-key must be 1 to {MAX_SESSION_KEY_CHARS} printable "
                "ASCII characters (send back the key the gateway returned).",
                param=HEADER,
            )
        if key.lower().startswith("agent:"):
            scoped_agent, sep, rest = key[len("agent:") :].partition(":")
            if not sep or not rest:
                raise InvalidSessionKey(
                    "x-openclaw-session-key 'agent:<id>:<key>' needs an agent id and a key.",
                    param=HEADER,
                )
            if scoped_agent.lower() != agent_id:
                raise InvalidSessionKey(
                    f"x-openclaw-session-key is scoped to agent {scoped_agent.lower()!r}, "
                    f"but this request runs on agent {agent_id!r}.",
                    param=HEADER,
                )
            _refuse_reserved(rest)
            return f"agent:{agent_id}:{rest}", True
        _refuse_reserved(key)
        return f"agent:{agent_id}:{key}", True
    if user_keys and user is not None and user.strip():
        name = user.strip().lower()
        if _UNSAFE_IN_KEY.search(name.replace("%", "")):
            # Its own namespace: keys of printable-ASCII users (OpenClaw's form, "%"
            # included) stay as they were, and no literal user can spell an encoded one.
            return f"agent:{agent_id}:openai-user-enc:{header_safe(name)}", True
        return f"agent:{agent_id}:openai-user:{name}", True
    return fresh_session_key(agent_id), False


def fresh_session_key(agent_id: str) -> str:
    """A new key nobody knows yet: a stateless request's, or a forked conversation's."""
    return f"agent:{agent_id}:openai:{uuid.uuid4()}"


def _refuse_reserved(rest: str) -> None:
    """:raise ReservedSessionKey: ``rest`` (the key after ``agent:<id>:``) is in one of
    OpenClaw's internal namespaces, as OpenClaw refuses it."""
    if rest.lower().startswith(RESERVED_NAMESPACES):
        raise ReservedSessionKey(
            "x-openclaw-session-key cannot use the reserved internal session namespaces "
            "(subagent:, cron:, acp:).",
            param=HEADER,
        )


def model_override(agent: AgentConfig, header_value: str | None) -> str | None:
    """The upstream model this run uses instead of the agent's own (``x-openclaw-model``),
    or None when the header is absent or blank.

    Called after authentication: whether the caller may override at all (the
    ``model_override`` scope of an API key) is checked before this.

    :raise ModelNotAllowed: the agent does not list the model in its ``models``.
    """
    if header_value is None or not header_value.strip():
        return None
    model = header_value.strip()
    if model in agent.models:
        return model
    shown = model if len(model) <= 64 else model[:61] + "..."
    if not agent.models:
        message = f"Agent {agent.id!r} does not allow choosing its model (no 'models' configured)."
    else:
        allowed = ", ".join(repr(name) for name in agent.models)
        message = f"Model {shown!r} is not allowed for agent {agent.id!r}. Allowed: {allowed}."
    raise ModelNotAllowed(message, param=MODEL_HEADER)


def header_safe(text: str) -> str:
    """``text`` with every character outside printable ASCII, and ``%``, percent-encoded
    (UTF-8), so the key it goes into can travel in a response header and come back
    unchanged in ``x-openclaw-session-key``. Distinct texts stay distinct.
    """
    if not _UNSAFE_IN_KEY.search(text):
        return text
    return _UNSAFE_IN_KEY.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), text)


# -- named API keys (SPEC 16.1) ----------------------------------------------------------


def key_session_key(
    key_id: str | None,
    agent_id: str,
    header_key: str | None,
    user: str | None,
    *,
    user_keys: bool = True,
) -> tuple[str, bool]:
    """:func:`session_key` for a request of the named key ``key_id`` (None: the
    operator, whose keys are unchanged).

    A named key's sessions live under ``agent:<agent>:key:<key id>:``: a bare header
    key ``k`` becomes ``agent:<agent>:key:<key id>:k``, ``user`` gives
    ``agent:<agent>:key:<key id>:openai-user:<user>``, a stateless request
    ``agent:<agent>:key:<key id>:openai:<uuid>``. A full key (``agent:...``) outside
    that namespace is another credential's session: 404, never re-scoped into a
    fresh one.

    :raise InvalidSessionKey: as :func:`session_key` (malformed, another agent's).
    :raise ReservedSessionKey: as :func:`session_key`.
    :raise SessionNotFound: a full key that is not this key's.
    """
    if key_id is None:
        return session_key(agent_id, header_key, user, user_keys=user_keys)
    agent_prefix = f"agent:{agent_id}:"
    prefix = f"{agent_prefix}key:{key_id}:"
    if header_key is not None and header_key.strip().lower().startswith("agent:"):
        key, sticky = session_key(agent_id, header_key, None)
        if not key.startswith(prefix):
            raise SessionNotFound(
                "No such session for this API key: x-openclaw-session-key names a session "
                "of another credential.",
                param=HEADER,
            )
        return key, sticky
    key, sticky = session_key(agent_id, header_key, user, user_keys=user_keys)
    return prefix + key[len(agent_prefix) :], sticky


def key_fresh_session_key(key_id: str | None, agent_id: str) -> str:
    """:func:`fresh_session_key` in the named key's namespace (None: the operator's)."""
    key = fresh_session_key(agent_id)
    if key_id is None:
        return key
    agent_prefix = f"agent:{agent_id}:"
    return f"{agent_prefix}key:{key_id}:{key[len(agent_prefix) :]}"


def resolve_allowed_agent(
    settings: Settings,
    allowed: frozenset[str] | None,
    header_agent: str | None,
    model: str | None,
) -> AgentConfig:
    """:func:`resolve_agent` for a credential that may use only the agents
    ``allowed`` (None: all): the others do not exist for it, down to the messages,
    which name only the allowed agents.

    :raise ModelNotFound: as :func:`resolve_agent`, and for an agent not allowed.
    """
    if allowed is None:
        return resolve_agent(settings, header_agent, model)
    visible = dataclasses.replace(
        settings, agents=tuple(agent for agent in settings.agents if agent.id in allowed)
    )
    header_named = header_agent is not None and bool(header_agent.strip())
    wants_default = not header_named and (model is None or agent_id_from_model(model) == "default")
    if wants_default and settings.default_agent_id not in allowed:
        agents = ", ".join(f"'openclaw/{a.id}'" for a in visible.agents)
        raise ModelNotFound(
            f"The model {model or 'openclaw'!r} does not exist for this API key; "
            f"its agents: {agents or 'none'}.",
            param="model",
        )
    return resolve_agent(visible, header_agent, model)
