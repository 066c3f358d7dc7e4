"""Who may do what, for a view: authentication, then a named key's request count, the
route's scope and its windows (SPEC 3 step 3 and SPEC 16.1), in one call that every
``/v1`` view makes first (chat completions, models, responses).
"""

from __future__ import annotations

import typing as t

from . import auth
from . import key_limits
from . import requestlog

if t.TYPE_CHECKING:
    from flask import Request

    from .auth import Authenticator
    from .principal import Principal
    from .sessions.base import SessionStore


def authorize(
    request: Request, authenticator: Authenticator, store: SessionStore, scope: str
) -> Principal:
    """Authenticate the request, count it against its key's windows, check the route's
    scope, refuse it when a window was full. The request's log line and metrics carry
    the principal's id from here on, and every response to it (errors included) the
    key's ``x-ratelimit-*`` headers.

    :param scope: the route's: ``chat``, ``responses`` or ``models``.
    :return: the principal: its agents (:meth:`~chatcompat.principal.Principal.allows_agent`),
        its sessions (:func:`chatcompat.routing.key_session_key`), its limits (pass it
        to :class:`~chatcompat.run.Run` for the run slot and the token count).
    :raise errors.APIError: 401/429 (auth), 403 (scope), 429 (limits), 503 (store).
    """
    principal = auth.authenticate(request, authenticator, store)
    record = requestlog.current()
    record.key_id = principal.id
    key_limits.admit(principal, scope, store, record.headers)
    return principal
