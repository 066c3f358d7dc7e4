"""The boundaries where the layers' failures become API errors."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat.agents.base import AgentError
from chatcompat.agents.base import AgentRejected
from chatcompat.agents.base import AgentTimeout
from chatcompat.agents.base import AgentUnavailable
from chatcompat.sessions.base import StoreError
from chatcompat.sessions.base import StoreUnreachable


def test_agent_errors_map_to_api_errors():
    rejected = errors.from_agent_error(AgentRejected(429, "slow down", "rate_limit_error", "rl"))
    assert isinstance(rejected, errors.UpstreamRejected)
    assert (rejected.status, rejected.message, rejected.type, rejected.code) == (
        429,
        "slow down",
        "rate_limit_error",
        "rl",
    )
    busy = errors.from_agent_error(AgentUnavailable("busy", retry_after_seconds=2.5))
    assert isinstance(busy, errors.AgentUnavailable) and busy.headers() == {"Retry-After": "3"}
    late = errors.from_agent_error(AgentTimeout("late"))
    assert isinstance(late, errors.GatewayTimeout) and late.message == "late"
    failed = errors.from_agent_error(AgentError("broke"))
    assert type(failed) is errors.UpstreamFailed and failed.message == "broke"
    already = errors.SessionBusy()
    assert errors.from_agent_error(already) is already


def test_an_unexpected_agent_exception_is_a_logged_500(caplog):
    mapped = errors.from_agent_error(KeyError("bug"))
    assert type(mapped) is errors.APIError and mapped.status == 500
    assert "unexpected error" in caplog.text


@pytest.mark.parametrize(
    ("raised", "unknown_outcome", "expected", "status"),
    [
        (StoreUnreachable("down"), False, errors.StoreUnavailable, 503),
        (StoreError("refused"), False, errors.APIError, 500),
        (StoreUnreachable("down"), True, errors.TurnMayNotBeStored, 503),
        (StoreError("refused"), True, errors.TurnMayNotBeStored, 503),
    ],
)
def test_store_errors_map_in_one_place(raised, unknown_outcome, expected, status):
    with pytest.raises(errors.APIError) as info:
        with errors.map_store_errors(unknown_outcome=unknown_outcome):
            raise raised
    assert type(info.value) is expected and info.value.status == status
    assert info.value.__cause__ is raised


def test_an_unknown_keyed_write_says_how_to_retry():
    with pytest.raises(errors.TurnMayNotBeStored) as info:
        with errors.map_store_errors(unknown_outcome=True, keyed=True):
            raise StoreUnreachable("timeout")
    assert "same Idempotency-Key" in info.value.message


def test_other_exceptions_pass_through_the_store_boundary():
    with pytest.raises(KeyError):
        with errors.map_store_errors():
            raise KeyError("not the store's")


def test_client_gone_is_in_the_tree():
    assert issubclass(errors.ClientGone, errors.APIError)
    assert (errors.ClientGone.status, errors.ClientGone.code) == (499, "client_closed_request")
