"""The blocking adapter: locks, cancellation on a vanished client, keepalives, storage."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest

from chatcompat import errors
from chatcompat.agents import backend_class
from chatcompat.config import AgentConfig
from chatcompat.history import split_request
from chatcompat.idempotency import Idempotency
from chatcompat.requestlog import RequestRecord
from chatcompat.runner import KEEPALIVE
from chatcompat.runner import ClientGone
from chatcompat.runner import Run
from chatcompat.sessions import open_store
from chatcompat.sessions.base import StoreUnavailable
from tests.conftest import SCRIPTED
from tests.polling import wait_until
from tests.scripted_agent import read_log


@pytest.fixture
def store(settings):
    store = open_store(settings.session_store)
    yield store
    store.close()


def make_run(
    settings,
    store,
    agent_config,
    key="agent:scripted:k",
    client_socket=None,
    sticky=True,
    idempotency=None,
):
    return Run(
        settings=settings,
        store=store,
        agent=backend_class(agent_config.backend)(agent_config),
        agent_config=agent_config,
        session_key=key,
        sticky=sticky,
        model="m",
        client_socket=client_socket,
        record=RequestRecord("r", "POST", "/"),
        idempotency=idempotency,
    )


@pytest.fixture(autouse=True)
def quick_turn_write_retries(monkeypatch):
    """No test here checks the pauses between turn-write attempts (0.2 s, then 0.4 s);
    they would add 0.6 s to every test of a write that keeps failing."""
    from chatcompat import runner

    monkeypatch.setattr(runner, "TURN_WRITE_PAUSE_SECONDS", 0.001)


SCRIPTED_AGENT = AgentConfig(id="scripted", backend=SCRIPTED, timeout_seconds=5)


@pytest.mark.live  # waits out real timeouts
def test_client_gone_cancels_the_agent_within_a_second(settings, store, tmp_path, monkeypatch):
    log = tmp_path / "agent.log"
    monkeypatch.setenv("SCRIPTED_AGENT_LOG", str(log))
    ours, theirs = socket.socketpair()
    run = make_run(settings, store, SCRIPTED_AGENT, client_socket=ours)
    run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    closed_at = time.monotonic()
    theirs.close()
    with pytest.raises(ClientGone):
        for _ in run.events(keepalive=None):
            pass
    run.close()
    (end,) = wait_until(
        lambda: [line for line in read_log(str(log)) if line["event"] == "end"],
        2,
        "the agent's end",
    )
    assert end["outcome"] == "cancelled"
    assert end["at"] - (time.time() - (time.monotonic() - closed_at)) < 1.0
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released
    ours.close()


def test_stream_generator_closed_by_the_server_cancels_and_stores_nothing(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[slow:100]] a b c d e f"}]), {})
    body = run.sse(include_usage=False)
    assert next(body).startswith(b"data: ")
    body.close()  # what gunicorn does when a write to the client fails
    assert run._cancel.is_set
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)


@pytest.mark.live  # waits out real timeouts
def test_keepalive_markers_while_silent(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[silent:0.5]] hi"}]), {})
    items = list(run.events(keepalive=0.1))
    run.close()
    assert items.count(KEEPALIVE) >= 3
    assert items[-1].__class__.__name__ == "Finish"


def test_second_run_on_a_session_waits_then_409(settings, store):
    quick = dataclasses.replace(settings, lock_timeout_seconds=0.3)
    first = make_run(quick, store, SCRIPTED_AGENT)
    first.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    second = make_run(quick, store, SCRIPTED_AGENT)
    started = time.monotonic()
    with pytest.raises(errors.SessionBusy):
        second.start(split_request([{"role": "user", "content": "hi"}]), {})
    assert 0.25 <= time.monotonic() - started < 1.5
    first.close()
    third = make_run(quick, store, SCRIPTED_AGENT)
    third.start(split_request([{"role": "user", "content": "hi"}]), {})
    assert third.complete()["choices"][0]["message"]["content"] == "hi"


def test_waiting_run_proceeds_when_the_lock_frees(settings, store, monkeypatch):
    first = make_run(settings, store, SCRIPTED_AGENT)
    first.start(split_request([{"role": "user", "content": "one"}]), {})
    second = make_run(settings, store, SCRIPTED_AGENT)
    refused = threading.Event()  # the second run found the lock taken: it waits now
    acquire = store.acquire_lock

    def watched(*args, **kwargs):
        got = acquire(*args, **kwargs)
        if not got:
            refused.set()
        return got

    monkeypatch.setattr(store, "acquire_lock", watched)
    finisher = threading.Thread(target=lambda: refused.wait(10) and first.complete())
    finisher.start()
    second.start(split_request([{"role": "user", "content": "two"}]), {})
    second.complete()
    finisher.join(10)
    assert refused.is_set()
    history = store.load_history("agent:scripted:k", 10)
    assert [m["content"] for m in history] == ["one", "one", "two", "two"]


class DownStore:
    """A store whose backend cannot be reached."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise StoreUnavailable("down")

        return fail


def test_store_unavailable_is_503_before_running(settings):
    run = make_run(settings, DownStore(), SCRIPTED_AGENT)
    with pytest.raises(errors.StoreUnavailable) as info:
        run.start(split_request([{"role": "user", "content": "hi"}]), {})
    assert "nothing was run or stored" in info.value.message
    keyed = make_run(settings, DownStore(), SCRIPTED_AGENT, idempotency=Idempotency("s", "f"))
    with pytest.raises(errors.StoreUnavailable) as info:
        keyed.claim()
    assert "nothing was run or stored" in info.value.message


class LostReplies:
    """Wraps a store: the first ``failures`` turn writes are applied, then raise as if
    their reply had been lost (a timeout after Redis ran the command)."""

    def __init__(self, store, failures, lands=True):
        self.store = store
        self.failures = failures
        self.lands = lands
        self.turn_ids = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def append_turn(self, *args, **kwargs):
        self.turn_ids.append(kwargs["turn_id"])
        if self.lands:
            self.store.append_turn(*args, **kwargs)
        if len(self.turn_ids) <= self.failures:
            raise StoreUnavailable("Timeout reading from socket")


def test_a_turn_write_with_an_unknown_outcome_is_retried_and_lands_once(settings, store):
    lossy = LostReplies(store, failures=1)
    run = make_run(settings, lossy, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    assert run.complete()["choices"][0]["message"]["content"] == "a b"
    assert len(lossy.turn_ids) == 2 and len(set(lossy.turn_ids)) == 1 and lossy.turn_ids[0]
    assert [len(turn.messages) for turn in store.transcript("agent:scripted:k")] == [2]


@pytest.mark.parametrize("keyed", [True, False])
def test_a_turn_write_that_stays_unknown_says_it_may_not_be_stored(settings, store, keyed):
    from chatcompat import runner

    lossy = LostReplies(store, failures=99)
    idempotency = Idempotency("scope", "fp") if keyed else None
    run = make_run(settings, lossy, SCRIPTED_AGENT, idempotency=idempotency)
    if keyed:
        assert run.claim() is None
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    with pytest.raises(errors.StoreUnavailable) as info:
        run.complete()
    assert info.value.status == 503 and info.value.code == "store_unavailable"
    assert "may not have been stored" in info.value.message
    assert ("same Idempotency-Key" in info.value.message) is keyed
    assert len(lossy.turn_ids) == runner.TURN_WRITE_ATTEMPTS  # bounded
    assert [len(turn.messages) for turn in store.transcript("agent:scripted:k")] == [2]
    if keyed:  # the write did land: the key replays it
        record = store.claim_idempotency("scope", "retry", "fp", 30)
        assert record.reply["choices"][0]["message"]["content"] == "a b"


def test_after_an_unknown_write_the_claim_stays_until_it_expires(settings, store):
    # Releasing it could overtake a write still queued in a paused Redis: a repeat
    # would run the agent again while that write lands after all.
    run = make_run(
        settings,
        LostReplies(store, failures=99, lands=False),
        SCRIPTED_AGENT,
        idempotency=Idempotency("scope", "fp"),
    )
    assert run.claim() is None
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    with pytest.raises(errors.TurnMayNotBeStored):
        run.complete()
    assert store.transcript("agent:scripted:k") == []
    assert store.claim_idempotency("scope", "retry", "fp", 30).running
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # the session lock is free


def test_a_stream_whose_turn_write_stays_unknown_ends_with_that_error(settings, store):
    run = make_run(settings, LostReplies(store, failures=99), SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    frames = list(run.sse(include_usage=False))
    assert b"may not have been stored" in frames[-2] and b"store_unavailable" in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"


@pytest.mark.live  # waits out real timeouts
def test_a_claim_is_renewed_while_the_run_lives_and_released_when_it_fails(
    settings, store, monkeypatch
):
    from chatcompat import runner

    monkeypatch.setattr(runner, "LOCK_TTL_SECONDS", 0.4)
    monkeypatch.setattr(runner, "LOCK_RENEW_SECONDS", 0.1)
    keyed = Idempotency("scope", "fp")
    run = make_run(settings, store, SCRIPTED_AGENT, sticky=False, idempotency=keyed)
    assert run.claim() is None
    run.start(split_request([{"role": "user", "content": "[[silent:1.2]] hi"}]), {})
    events = run.events(keepalive=0.05)
    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:  # well past the TTL: renewals keep it ours
        next(events)
        assert store.claim_idempotency("scope", "intruder", "fp", 1).running
    run.close()  # the run ends without a reply: the key is free at once
    assert store.claim_idempotency("scope", "retry", "fp", 1) is None


def test_store_failing_at_the_end_is_an_error_frame_not_a_finish(settings, store, monkeypatch):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})

    def broken(*args, **kwargs):
        raise StoreUnavailable("gone")

    monkeypatch.setattr(store, "append_turn", broken)
    frames = list(run.sse(include_usage=True))
    assert b"store_unavailable" in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert not any(b'"finish_reason":"stop"' in f for f in frames)


@pytest.mark.live  # waits out real timeouts
def test_the_lock_is_short_lived_and_renewed_while_the_run_lives(settings, store, monkeypatch):
    from chatcompat import runner

    monkeypatch.setattr(runner, "LOCK_TTL_SECONDS", 0.4)
    monkeypatch.setattr(runner, "LOCK_RENEW_SECONDS", 0.1)
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[silent:1.2]] hi"}]), {})
    events = run.events(keepalive=0.05)
    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:  # well past the TTL: renewals keep it ours
        next(events)
        assert not store.acquire_lock("agent:scripted:k", "intruder", 1)
    run.close()
    # An abandoned lock (its worker died: nobody renews it) frees itself after the TTL.
    assert store.acquire_lock("agent:scripted:dead", "dead-worker", 0.4)
    assert not store.acquire_lock("agent:scripted:dead", "survivor", 1)
    wait_until(
        lambda: store.acquire_lock("agent:scripted:dead", "survivor", 1), 5, "the TTL to pass"
    )


def test_the_run_timeout_holds_while_events_keep_coming(settings, store):
    quick = dataclasses.replace(SCRIPTED_AGENT, timeout_seconds=0.3)
    run = make_run(settings, store, quick)
    run.start(split_request([{"role": "user", "content": "[[slow:5]] " + "w " * 400}]), {})
    frames = []
    started = time.monotonic()
    for frame in run.sse(include_usage=False):
        frames.append(frame)
        time.sleep(0.02)  # a slow reader: the queue is never empty
    assert time.monotonic() - started < 2.0
    assert b'"code":"timeout"' in frames[-2] and frames[-1] == b"data: [DONE]\n\n"
    assert store.load_history("agent:scripted:k", 10) is None


def test_any_store_error_at_the_end_is_an_error_frame(settings, store, monkeypatch):
    from chatcompat.sessions.base import StoreError

    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})

    def broken(*args, **kwargs):
        raise StoreError("cannot encode")

    monkeypatch.setattr(store, "append_turn", broken)
    frames = list(run.sse(include_usage=False))
    assert b'"code":"internal_error"' in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released
