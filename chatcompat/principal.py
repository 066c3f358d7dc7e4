"""Who sent a request, and what it may do (SPEC 16): the :class:`Principal` that
:func:`chatcompat.auth.authenticate` returns.

The operator (the gateway's single token or password) and the anonymous caller (auth
mode ``none``) have every right. A named key (``gateway.auth.keys``) has its agents,
its scopes and its limits, and its own namespace of sessions, response ids and
idempotency keys: everything it creates carries its id.
"""

from __future__ import annotations

import dataclasses

from . import errors
from .settings import SCOPES
from .settings import ApiKey
from .settings import KeyLimits


@dataclasses.dataclass(frozen=True)
class Principal:
    """A request's credential.

    :param id: ``"operator"``, ``"anonymous"`` or the named key's id (named keys may
        not take the first two): what scopes per-credential state (idempotency keys,
        the ``owner`` of stored responses) and labels logs and metrics.
    :param operator: the operator or the anonymous caller: every agent, every scope,
        every session, no limits.
    :param agents: the agent ids it may use; None: all.
    """

    id: str
    operator: bool
    agents: frozenset[str] | None = None
    scopes: frozenset[str] = frozenset(SCOPES)
    limits: KeyLimits = KeyLimits()

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        return cls(key.id, False, key.agents, key.scopes, key.limits)

    @property
    def key_id(self) -> str | None:
        """The named key's id; None for the operator (its sessions are keyed as before)."""
        return None if self.operator else self.id

    def require_scope(self, scope: str) -> None:
        """SPEC 16.1: the route's scope, right after authentication.

        :param scope: one of :data:`~chatcompat.settings.SCOPES`.
        :raise errors.PermissionDenied: the key lacks it (403).
        """
        if scope not in self.scopes:
            raise errors.PermissionDenied(
                f"This API key ({self.id!r}) does not have the {scope!r} scope."
            )

    def allows_agent(self, agent_id: str) -> bool:
        """Whether the agent exists for this principal (an agent it may not use is
        answered as unknown: 404 ``model_not_found``)."""
        return self.agents is None or agent_id in self.agents

    def owns(self, owner: str) -> bool:
        """Whether a stored thing whose ``owner`` is a principal's id (a stored
        response) is this principal's to continue, read or delete: the operator's,
        anything; a named key's, only its own (others are answered 404)."""
        return self.operator or owner == self.id

    def owns_session(self, session_key: str) -> bool:
        """Whether a full session key is this principal's to continue, read or delete:
        the operator's, any; a named key's, only those in its namespace
        (:func:`chatcompat.routing.key_session_key`)."""
        return self.operator or session_key_owner(session_key) == self.id


OPERATOR = Principal("operator", True)
ANONYMOUS = Principal("anonymous", True)


def session_key_owner(session_key: str) -> str | None:
    """The named key a session key belongs to (``agent:<agent>:key:<id>:...``), or None
    for the operator's keys."""
    parts = session_key.split(":", 4)
    if len(parts) == 5 and parts[0] == "agent" and parts[2] == "key" and parts[3]:
        return parts[3]
    return None
