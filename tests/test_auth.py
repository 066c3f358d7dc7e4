"""auth.authenticate: the view's authentication step (SPEC 3 step 3) as one call,
which counts each refusal by its reason and turns a store failure into 503."""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from chatcompat import errors
from chatcompat.auth import ANONYMOUS
from chatcompat.auth import OPERATOR
from chatcompat.auth import Authenticator
from chatcompat.auth import authenticate
from chatcompat.sessions.base import StoreUnreachable
from chatcompat.settings import ApiKey
from chatcompat.settings import RateLimit
from chatcompat.settings import Settings
from tests.conftest import AUTH

REASONS = ("missing", "invalid", "locked_out")


class LockoutStore:
    """The lockout part of a session store: ``remaining`` seconds of lockout, or
    ``error`` raised by every call."""

    def __init__(self, remaining: float = 0.0, error: Exception | None = None) -> None:
        self.remaining = remaining
        self.error = error
        self.failures: list[str] = []
        self.cleared: list[str] = []

    def auth_lockout_remaining(self, client: str) -> float:
        if self.error is not None:
            raise self.error
        return self.remaining

    def record_auth_failure(self, client: str, limit: RateLimit) -> None:
        self.failures.append(client)

    def clear_auth_failures(self, client: str) -> None:
        self.cleared.append(client)


def request(headers: dict[str, str] | None = None, peer: str = "203.0.113.9") -> Request:
    builder = EnvironBuilder(
        path="/v1/chat/completions",
        method="POST",
        headers=headers or {},
        environ_base={"REMOTE_ADDR": peer},
    )
    return Request(builder.get_environ())


def failures() -> dict[str, float]:
    """chatcompat_auth_failures_total by reason, as the Prometheus registry has it."""
    return {
        reason: REGISTRY.get_sample_value("chatcompat_auth_failures_total", {"reason": reason})
        or 0.0
        for reason in REASONS
    }


def counted(before: dict[str, float]) -> dict[str, float]:
    """What was counted since ``before``, by reason."""
    after = failures()
    return {reason: after[reason] - before[reason] for reason in REASONS}


def test_the_right_credential_names_the_principal_and_counts_nothing(settings: Settings) -> None:
    store = LockoutStore()
    before = failures()
    principal = authenticate(request(AUTH), Authenticator(settings), t.cast(t.Any, store))
    assert principal == OPERATOR
    assert failures() == before
    assert store.cleared == ["203.0.113.9"]


def test_auth_mode_none_is_anonymous(settings: Settings) -> None:
    anonymous = Authenticator(dataclasses.replace(settings, auth_mode="none"))
    assert authenticate(request(), anonymous, t.cast(t.Any, LockoutStore())) == ANONYMOUS


@pytest.mark.parametrize(
    ("headers", "reason", "recorded"),
    [
        ({}, "missing", False),  # a missing credential is refused, not held against the client
        ({"Authorization": ""}, "missing", False),
        ({"Authorization": "Bearer wrong"}, "invalid", True),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "invalid", False),  # no bearer secret at all
    ],
)
def test_a_refused_credential_is_counted_by_its_reason(
    settings: Settings, headers: dict[str, str], reason: str, recorded: bool
) -> None:
    store = LockoutStore()
    before = failures()
    with pytest.raises(errors.AuthenticationFailed):
        authenticate(request(headers), Authenticator(settings), t.cast(t.Any, store))
    assert counted(before) == {r: (1.0 if r == reason else 0.0) for r in REASONS}
    assert store.failures == (["203.0.113.9"] if recorded else [])


def test_a_locked_out_client_is_counted_as_locked_out(settings: Settings) -> None:
    before = failures()
    with pytest.raises(errors.TooManyAuthFailures):
        # Locked out even with the right credential: the lockout is checked first.
        authenticate(request(AUTH), Authenticator(settings), t.cast(t.Any, LockoutStore(300)))
    assert counted(before) == {"missing": 0.0, "invalid": 0.0, "locked_out": 1.0}


def test_a_store_that_cannot_answer_is_503_and_no_auth_failure(settings: Settings) -> None:
    store = LockoutStore(error=StoreUnreachable("down"))
    before = failures()
    with pytest.raises(errors.StoreUnavailable) as caught:
        authenticate(request(AUTH), Authenticator(settings), t.cast(t.Any, store))
    assert caught.value.status == 503
    assert failures() == before


def test_the_client_is_the_forwarded_one_behind_a_trusted_proxy(settings: Settings) -> None:
    trusting = Authenticator(dataclasses.replace(settings, trusted_proxies=("10.0.0.0/8",)))
    store = LockoutStore()
    sent = request({**AUTH, "X-Forwarded-For": "198.51.100.7, 10.0.0.2"}, peer="10.0.0.1")
    assert authenticate(sent, trusting, t.cast(t.Any, store)) == OPERATOR
    assert store.cleared == ["198.51.100.7"]


# -- named keys (SPEC 16) --------------------------------------------------------------


def _keyed(settings: Settings, **overrides: t.Any) -> Authenticator:
    keys = (
        ApiKey("web", hashlib.sha256(b"web-token").digest(), agents=frozenset({"main"})),
        ApiKey("bot", hashlib.sha256(b"bot-token").digest(), scopes=frozenset({"chat"})),
    )
    return Authenticator(dataclasses.replace(settings, api_keys=keys, **overrides))


def test_a_named_key_names_its_principal(settings: Settings) -> None:
    store = LockoutStore()
    web = authenticate(
        request({"Authorization": "Bearer web-token"}), _keyed(settings), t.cast(t.Any, store)
    )
    assert (web.id, web.operator, web.agents) == ("web", False, frozenset({"main"}))
    assert web.allows_agent("main") and not web.allows_agent("beta")
    bot = authenticate(
        request({"Authorization": "Bearer bot-token"}), _keyed(settings), t.cast(t.Any, store)
    )
    assert bot.id == "bot" and bot.allows_agent("beta")
    with pytest.raises(errors.PermissionDenied, match="'models'"):
        bot.require_scope("models")
    assert authenticate(request(AUTH), _keyed(settings), t.cast(t.Any, store)) == OPERATOR
    assert store.cleared == ["203.0.113.9"] * 3 and store.failures == []


def test_a_wrong_token_is_counted_whichever_key_it_resembles(settings: Settings) -> None:
    store = LockoutStore()
    for wrong in ("web-token ", "web-tokem", "bot", AUTH["Authorization"][7:] + "x"):
        with pytest.raises(errors.AuthenticationFailed):
            _keyed(settings).check(f"Bearer {wrong}x", "203.0.113.9", t.cast(t.Any, store))
    assert store.failures == ["203.0.113.9"] * 4


def test_without_an_operator_secret_only_the_keys_open(settings: Settings) -> None:
    keys_only = _keyed(settings, auth_secret=None)
    store = t.cast(t.Any, LockoutStore())
    assert keys_only.check("Bearer web-token", "203.0.113.9", store).id == "web"
    with pytest.raises(errors.AuthenticationFailed):
        keys_only.check(AUTH["Authorization"], "203.0.113.9", store)
