"""The protocol-neutral run: locks, claims, cancellation on a vanished client,
keepalives, deadlines, storing the turn."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time
import typing as t

import pytest

from chatcompat import errors
from chatcompat import lease
from chatcompat import run as run_module
from chatcompat.agents.base import Agent
from chatcompat.agents.base import AgentRequest
from chatcompat.agents.base import Cancellation
from chatcompat.agents.base import Event
from chatcompat.agents.base import Finish
from chatcompat.agents.base import InputImage
from chatcompat.agents.base import Started
from chatcompat.history import split_request
from chatcompat.idempotency import Idempotency
from chatcompat.images import IMAGE_MARKER
from chatcompat.protocol.chat_completions import complete
from chatcompat.protocol.reply import Reply
from chatcompat.requestlog import RequestRecord
from chatcompat.run import KEEPALIVE
from chatcompat.run import Continuation
from chatcompat.sessions.base import StoredResponse
from chatcompat.sessions.base import StoreUnreachable
from chatcompat.settings import AgentConfig
from chatcompat.settings import ImagePolicy
from tests.polling import wait_until
from tests.run_support import SCRIPTED_AGENT
from tests.run_support import LostReplies
from tests.run_support import make_run
from tests.scripted_agent import read_log

pytestmark = pytest.mark.usefixtures("quick_turn_write_retries")


def ends(agent_log: str) -> list[dict[str, t.Any]]:
    """The end lines of the scripted agent's runs."""
    return [line for line in read_log(agent_log) if line["event"] == "end"]


@pytest.mark.live  # waits out real timeouts
def test_client_gone_cancels_the_agent_within_a_second(settings, store, agent_log):
    ours, theirs = socket.socketpair()
    run = make_run(settings, store, SCRIPTED_AGENT, client_socket=ours)
    run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    closed_at = time.monotonic()
    theirs.close()
    with pytest.raises(errors.ClientGone):
        for _ in run.events(keepalive=None):
            pass
    run.close()
    (end,) = wait_until(
        lambda: ends(agent_log),
        2,
        "the agent's end",
    )
    assert end["outcome"] == "cancelled"
    assert end["at"] - (time.time() - (time.monotonic() - closed_at)) < 1.0
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released
    ours.close()


# -- a JSON client's run: the agent runs in the request's greenlet, a timer watches


@pytest.mark.live  # waits out real timeouts
def test_a_json_run_whose_client_leaves_is_cancelled_within_a_second(settings, store, agent_log):
    ours, theirs = socket.socketpair()
    run = make_run(settings, store, SCRIPTED_AGENT, client_socket=ours, stream=False)
    threading.Timer(0.2, theirs.close).start()
    started = time.monotonic()
    with pytest.raises(errors.ClientGone):
        run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    assert time.monotonic() - started < 1.2  # closed at 0.2 s, checked every 0.5 s
    run.close()
    (end,) = ends(agent_log)
    assert end["outcome"] == "cancelled"
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released
    ours.close()


def test_a_json_run_for_a_client_already_gone_runs_no_agent(settings, store, agent_log):
    ours, theirs = socket.socketpair()
    theirs.close()
    run = make_run(settings, store, SCRIPTED_AGENT, client_socket=ours, stream=False)
    with pytest.raises(errors.ClientGone):
        run.start(split_request([{"role": "user", "content": "hi"}]), {})
    run.close()
    assert read_log(agent_log) == []
    ours.close()


@pytest.mark.live  # waits out real timeouts
def test_a_json_run_past_its_deadline_is_cancelled_and_a_timeout(settings, store, agent_log):
    agent = dataclasses.replace(SCRIPTED_AGENT, timeout_seconds=0.3)
    run = make_run(settings, store, agent, stream=False)
    started = time.monotonic()
    with pytest.raises(errors.GatewayTimeout):
        run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    assert time.monotonic() - started < 1.0
    run.close()
    (end,) = ends(agent_log)
    assert end["outcome"] == "cancelled"


@pytest.mark.live  # waits out real timeouts
def test_a_json_run_keeps_its_lock_while_the_agent_works(settings, store, monkeypatch):
    monkeypatch.setattr(lease, "LOCK_TTL_SECONDS", 0.4)
    monkeypatch.setattr(lease, "LOCK_RENEW_SECONDS", 0.1)
    monkeypatch.setattr(run_module, "DISCONNECT_POLL_SECONDS", 0.05)
    intruded: list[bool] = []
    done = threading.Event()

    def intrude() -> None:  # well past the TTL: renewals keep it ours
        while not done.wait(0.1):
            intruded.append(store.acquire_lock("agent:scripted:k", "intruder", 1))

    run = make_run(settings, store, SCRIPTED_AGENT, stream=False)
    watcher = threading.Thread(target=intrude)
    watcher.start()
    try:
        run.start(split_request([{"role": "user", "content": "[[silent:1.2]] hi"}]), {})
    finally:
        done.set()
        watcher.join()
    reply = complete(run)
    run.close()
    assert len(intruded) >= 8 and not any(intruded)
    assert reply["choices"][0]["message"]["content"] == "hi"


class _SlowRenewals:
    """Wraps a store: a lock taken off the test's thread (a renewal of the JSON run's
    timer) takes DELAY seconds."""

    DELAY = 0.3

    def __init__(self, store):
        self.store = store
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def acquire_lock(self, key, owner, ttl_seconds):
        if threading.current_thread() is not threading.main_thread():
            self.calls += 1
            time.sleep(self.DELAY)
        return self.store.acquire_lock(key, owner, ttl_seconds)


@pytest.mark.live  # waits out real timeouts
def test_a_renewal_under_way_when_a_json_run_ends_does_not_retake_its_lock(
    settings, store, monkeypatch
):
    monkeypatch.setattr(lease, "LOCK_RENEW_SECONDS", 0.05)
    monkeypatch.setattr(run_module, "DISCONNECT_POLL_SECONDS", 0.05)
    slow = _SlowRenewals(store)
    run = make_run(settings, slow, SCRIPTED_AGENT, stream=False)
    run.start(split_request([{"role": "user", "content": "[[silent:0.2]] hi"}]), {})
    complete(run)
    run.close()
    assert slow.calls >= 1  # the timer renewed during the run
    time.sleep(0.5)  # any renewal still under way would have landed by now
    assert store.acquire_lock("agent:scripted:k", "next-run", 5)


@pytest.mark.live  # waits out real timeouts
def test_a_slow_renewal_does_not_delay_noticing_a_client_gone(
    settings, store, agent_log, monkeypatch
):
    monkeypatch.setattr(lease, "LOCK_RENEW_SECONDS", 0.05)
    monkeypatch.setattr(run_module, "DISCONNECT_POLL_SECONDS", 0.05)
    monkeypatch.setattr(_SlowRenewals, "DELAY", 1.0)
    ours, theirs = socket.socketpair()
    run = make_run(settings, _SlowRenewals(store), SCRIPTED_AGENT, client_socket=ours, stream=False)
    threading.Timer(0.2, theirs.close).start()
    closed_at = time.time() + 0.2
    with pytest.raises(errors.ClientGone):
        run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
    run.close()
    (end,) = ends(agent_log)
    assert end["outcome"] == "cancelled"
    assert end["at"] - closed_at < 0.5  # not after the 1 s renewal
    ours.close()


# A JSON run in a gevent worker whose greenlet is killed (gunicorn's shutdown).
KILLED_JSON_RUN = """
import json
import sys

from gevent import monkey

monkey.patch_all()

import gevent

from chatcompat.history import split_request
from chatcompat.sessions import SQLiteStore
from chatcompat.settings import Settings
from tests.run_support import SCRIPTED_AGENT
from tests.run_support import make_run

store = SQLiteStore(sys.argv[1])
run = make_run(Settings(state_dir=sys.argv[2]), store, SCRIPTED_AGENT, stream=False)
outcome = []


def request():
    try:
        run.start(split_request([{"role": "user", "content": "[[hang]]"}]), {})
        outcome.append("start returned")
    except BaseException as exc:
        outcome.append(type(exc).__name__)
        raise


greenlet = gevent.spawn(request)
gevent.sleep(0.2)
greenlet.kill()
print(json.dumps({"outcome": outcome, "lock_free": store.acquire_lock("agent:scripted:k", "o", 5)}))
"""


def test_a_killed_json_run_dies_and_gives_its_lock_back(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_JSON_RUN, str(tmp_path / "s.db"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=str(pathlib.Path(__file__).resolve().parents[1]),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"outcome": ["GreenletExit"], "lock_free": True}


class _SlowToStop(Agent):
    """Waits for its cancellation, then takes its time to wind down (as pi's abort)."""

    name = "slow-to-stop"

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        yield Started()
        while not cancel.wait(0.05):
            pass
        time.sleep(1.5)


@pytest.mark.live  # waits out real timeouts
def test_a_json_run_of_an_agent_slow_to_stop_is_answered_at_its_deadline(settings, store):
    config = AgentConfig(id="slow", backend="slow-to-stop", timeout_seconds=0.3)
    run = run_module.Run(
        settings=settings,
        store=store,
        agent=_SlowToStop(config),
        agent_config=config,
        session_key="agent:slow:k",
        sticky=True,
        model="m",
        client_socket=None,
        record=RequestRecord("r", "POST", "/"),
        stream=False,
    )
    started = time.monotonic()
    with pytest.raises(errors.GatewayTimeout):
        run.start(split_request([{"role": "user", "content": "hi"}]), {})
        complete(run)  # the agent's wind-down goes on elsewhere
    assert time.monotonic() - started < 1.0


def test_a_json_run_may_have_more_events_than_a_streams_queue_holds(settings, store):
    words = [f"w{n}" for n in range(3 * run_module.QUEUE_SIZE)]
    run = make_run(settings, store, SCRIPTED_AGENT, stream=False)
    run.start(split_request([{"role": "user", "content": " ".join(words)}]), {})
    reply = complete(run)
    run.close()
    assert reply["choices"][0]["message"]["content"] == " ".join(words)
    stored = store.load_history("agent:scripted:k", 10)
    assert stored is not None and stored[-1]["content"] == " ".join(words)


@pytest.mark.live  # waits out real timeouts
def test_keepalive_markers_while_silent(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[silent:0.5]] hi"}]), {})
    items = list(run.events(keepalive=0.1))
    run.close()
    assert items.count(KEEPALIVE) >= 3
    assert items[-1].__class__.__name__ == "Finish"


@pytest.mark.live  # waits out real timeouts
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
    assert complete(third)["choices"][0]["message"]["content"] == "hi"


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
    finisher = threading.Thread(target=lambda: refused.wait(10) and complete(first))
    finisher.start()
    second.start(split_request([{"role": "user", "content": "two"}]), {})
    complete(second)
    finisher.join(10)
    assert refused.is_set()
    history = store.load_history("agent:scripted:k", 10)
    assert [m["content"] for m in history] == ["one", "one", "two", "two"]


class DownStore:
    """A store whose backend cannot be reached."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise StoreUnreachable("down")

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


def test_a_turn_write_with_an_unknown_outcome_is_retried_and_lands_once(settings, store):
    lossy = LostReplies(store, failures=1)
    run = make_run(settings, lossy, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    assert complete(run)["choices"][0]["message"]["content"] == "a b"
    assert len(lossy.turn_ids) == 2 and len(set(lossy.turn_ids)) == 1 and lossy.turn_ids[0]
    assert [len(turn.messages) for turn in store.transcript("agent:scripted:k")] == [2]


@pytest.mark.parametrize("keyed", [True, False])
def test_a_turn_write_that_stays_unknown_says_it_may_not_be_stored(settings, store, keyed):
    lossy = LostReplies(store, failures=99)
    idempotency = Idempotency("scope", "fp") if keyed else None
    run = make_run(settings, lossy, SCRIPTED_AGENT, idempotency=idempotency)
    if keyed:
        assert run.claim() is None
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    with pytest.raises(errors.StoreUnavailable) as info:
        complete(run)
    assert info.value.status == 503 and info.value.code == "store_unavailable"
    assert "may not have been stored" in info.value.message
    assert ("same Idempotency-Key" in info.value.message) is keyed
    assert len(lossy.turn_ids) == run_module.TURN_WRITE_ATTEMPTS  # bounded
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
        complete(run)
    assert store.transcript("agent:scripted:k") == []
    assert store.claim_idempotency("scope", "retry", "fp", 30).running
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # the session lock is free


@pytest.mark.live  # waits out real timeouts
def test_a_claim_is_renewed_while_the_run_lives_and_released_when_it_fails(
    settings, store, monkeypatch
):
    monkeypatch.setattr(lease, "LOCK_TTL_SECONDS", 0.4)
    monkeypatch.setattr(lease, "LOCK_RENEW_SECONDS", 0.1)
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


@pytest.mark.live  # waits out real timeouts
def test_the_lock_is_short_lived_and_renewed_while_the_run_lives(settings, store, monkeypatch):
    monkeypatch.setattr(lease, "LOCK_TTL_SECONDS", 0.4)
    monkeypatch.setattr(lease, "LOCK_RENEW_SECONDS", 0.1)
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


@pytest.mark.live  # starts a real process
def test_the_run_does_not_import_a_wire_protocol():
    code = (
        "import sys, chatcompat.run; "
        "print(sorted(m for m in sys.modules if m.startswith('chatcompat.protocol')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_stores_its_turn_whatever_the_wire_format(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    reply = Reply()
    for event in run.events():
        reply.add(event)
    run.finish(reply.message(), reply.usage)
    run.close()
    history = store.load_history("agent:scripted:k", 10)
    assert history == [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "a b"}]
    assert run.record.usage is reply.usage


def test_a_keyed_run_stores_nothing_without_the_reply_to_replay(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT, idempotency=Idempotency("scope", "fp"))
    assert run.claim() is None and run.keyed
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    reply = Reply()
    for event in run.events():
        reply.add(event)
    with pytest.raises(ValueError):
        run.finish(reply.message(), reply.usage)
    run.close()
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.claim_idempotency("scope", "retry", "fp", 1) is None  # released


def test_a_stream_failure_is_recorded_as_the_outcome(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    assert run.stream_failed(errors.ClientGone()) is None
    assert run.record.outcome == "client_gone"
    assert run.stream_failed(errors.GatewayTimeout()).code == "timeout"
    assert run.record.outcome == "error:timeout"
    bug = run.stream_failed(KeyError("bug"))
    assert bug.status == 500 and run.record.outcome == "error:internal_error"


class SlowWrites:
    """Wraps a store: each turn write takes ``seconds``; lock releases are logged."""

    def __init__(self, store, seconds, said):
        self.store, self.seconds, self.said = store, seconds, said

    def __getattr__(self, name):
        return getattr(self.store, name)

    def append_turn(self, *args, **kwargs):
        self.said.append("write starts")
        time.sleep(self.seconds)
        stored = self.store.append_turn(*args, **kwargs)
        self.said.append("write done")
        return stored

    def release_lock(self, *args, **kwargs):
        self.said.append("lock released")
        return self.store.release_lock(*args, **kwargs)


@pytest.mark.live  # waits out real timeouts
def test_the_watchdog_leaves_a_turn_write_in_progress_alone(settings, store, monkeypatch):
    # The deadline and its grace pass while the turn is being written: the lock (and a
    # claim) must stay with the write until it lands.
    monkeypatch.setattr(run_module, "DEADLINE_GRACE_SECONDS", 0.05)
    said: list[str] = []
    quick = dataclasses.replace(SCRIPTED_AGENT, timeout_seconds=0.3)
    run = make_run(settings, SlowWrites(store, 0.6, said), quick)
    run.start(split_request([{"role": "user", "content": "hi"}]), {})
    run.watch()
    reply = Reply()
    for event in run.events():
        reply.add(event)
    run.finish(reply.message(), reply.usage)
    run.close()
    assert said == ["write starts", "write done", "lock released"]
    assert run.record.outcome == "ok"
    assert len(store.transcript("agent:scripted:k")) == 1


class _Recording(Agent):
    """Takes images; records what each run received."""

    accepts_images = True
    seen: t.ClassVar[list[AgentRequest]] = []

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        self.seen.append(request)
        yield Started()
        yield Finish()


class _RecordingBytes(_Recording):
    needs_image_bytes = True


def _image_run(settings, store, cls, policy):
    config = AgentConfig(id="img", backend="x", images=policy)
    return run_module.Run(settings=settings, store=store, agent=cls(config), agent_config=config,
                          session_key="agent:img:k", sticky=True, model="m", client_socket=None,
                          record=RequestRecord("r", "POST", "/"))  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "policy", "marked", "images"),
    [
        (_Recording, ImagePolicy(), True, False),
        (_Recording, ImagePolicy(history="keep"), False, False),
        (_RecordingBytes, ImagePolicy(history="keep"), True, True),  # its history is text
    ],
)
def test_earlier_images_and_the_new_turns_bytes(settings, store, cls, policy, marked, images):
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "user", "content": [picture]}, {"role": "assistant", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, picture]}]  # fmt: skip
    new = (InputImage(param="messages[2].content[1].image_url.url", data=b"x", mime_type="m"),)
    run = _image_run(settings, store, cls, policy)
    _Recording.seen.clear()
    run.start(split_request(messages), {}, new_images=new)
    list(run.events())
    run.close()
    (request,) = _Recording.seen
    earlier = request.messages[0]["content"][0]
    assert earlier == ({"type": "text", "text": IMAGE_MARKER} if marked else picture)
    assert request.messages[-1]["content"][1] == picture  # the new turn as sent
    assert request.images == (new if images else ())


def _turn(run, text: str, continuation=None, response_id: str | None = None) -> None:
    """One run to the end on ``text``, storing a response ``response_id`` with it."""
    run.start(split_request([{"role": "user", "content": text}]), {}, continuation)
    reply = Reply()
    for event in run.events():
        reply.add(event)
    response = None
    if response_id is not None:
        response = StoredResponse(response_id, "operator", {"id": response_id}, [])
    run.finish(reply.message(), reply.usage, response=response)
    run.close()


def _said(history) -> list[str]:
    return [message["content"] for message in history]


def test_a_fork_starts_from_the_responses_place_and_leaves_the_source_alone(settings, store):
    source = "agent:scripted:k"
    _turn(make_run(settings, store, SCRIPTED_AGENT, key=source), "one", response_id="resp_1")
    _turn(make_run(settings, store, SCRIPTED_AGENT, key=source), "two", response_id="resp_2")
    first = store.get_response("resp_1")
    assert (first.position, first.latest) == (2, False)
    fork = Continuation("resp_1", source, first.position, fork=True)
    _turn(make_run(settings, store, SCRIPTED_AGENT, key="agent:scripted:f"), "three", fork, "r3")
    assert _said(store.load_history("agent:scripted:f", 10)) == ["one", "one", "three", "three"]
    assert _said(store.load_history(source, 10)) == ["one", "one", "two", "two"]
    assert store.get_response("r3").latest and store.get_response("resp_2").latest


def test_continuing_a_response_that_another_turn_followed_meanwhile_is_409(settings, store):
    key = "agent:scripted:k"
    _turn(make_run(settings, store, SCRIPTED_AGENT, key=key), "one", response_id="resp_1")
    # Chosen while resp_1 was the latest; another turn landed before the lock was taken.
    stale = Continuation("resp_1", key, 2, fork=False)
    _turn(make_run(settings, store, SCRIPTED_AGENT, key=key), "two")
    run = make_run(settings, store, SCRIPTED_AGENT, key=key)
    with pytest.raises(errors.ResponseContinued):
        run.start(split_request([{"role": "user", "content": "three"}]), {}, stale)
    assert store.acquire_lock(key, "other", 5)  # given back
    assert _said(store.load_history(key, 10)) == ["one", "one", "two", "two"]


def test_a_fork_of_a_session_that_expired_meanwhile_is_404(settings, store):
    gone = Continuation("resp_1", "agent:scripted:gone", 2, fork=True)
    run = make_run(settings, store, SCRIPTED_AGENT, key="agent:scripted:f")
    with pytest.raises(errors.PreviousResponseNotFound):
        run.start(split_request([{"role": "user", "content": "x"}]), {}, gone)


def test_store_false_reads_the_session_and_writes_nothing(settings, store):
    key = "agent:scripted:k"
    _turn(make_run(settings, store, SCRIPTED_AGENT, key=key), "one")
    run = make_run(settings, store, SCRIPTED_AGENT, key=key)
    run.store_turn = False
    _turn(run, "two")
    assert _said(store.load_history(key, 10)) == ["one", "one"]


# -- the request's rules on the events (chatcompat.reply_rules) -------------------------


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_reply_without_the_demanded_tool_call_fails_and_stores_nothing(settings, store, choice):
    run = make_run(settings, store, SCRIPTED_AGENT, idempotency=Idempotency("scope", "fp"))
    assert run.claim() is None
    run.start(split_request([{"role": "user", "content": "plain words"}]), {"tool_choice": choice})
    reply = Reply()
    with pytest.raises(errors.ToolChoiceNotSatisfied) as caught:
        for event in run.events():
            reply.add(event)
    run.close()
    assert caught.value.status == 502
    assert reply.text == ""  # the prose never reached the protocol
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released
    assert store.claim_idempotency("scope", "retry", "fp", 1) is None  # free for a retry


def test_a_reply_with_the_demanded_tool_call_is_stored(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    choice = {"type": "function", "function": {"name": "get_time"}}
    run.start(split_request([{"role": "user", "content": "[[tools]]"}]), {"tool_choice": choice})
    reply = Reply()
    for event in run.events():
        reply.add(event)
    run.finish(reply.message(), reply.usage)
    run.close()
    history = store.load_history("agent:scripted:k", 10)
    assert [call["function"]["name"] for call in history[-1]["tool_calls"]] == [
        "get_weather",
        "get_time",
    ]


def test_tool_choice_none_relays_no_tool_call(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[tools]]"}]), {"tool_choice": "none"})
    reply = Reply()
    for event in run.events():
        reply.add(event)
    run.finish(reply.message(), reply.usage)
    run.close()
    assert reply.tool_calls == [] and reply.finish_reason == "stop"
    assert store.load_history("agent:scripted:k", 10)[-1] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("mode", ["relay", "drop"])
def test_reasoning_is_relayed_or_dropped_and_never_stored(settings, store, mode):
    agent = dataclasses.replace(SCRIPTED_AGENT, reasoning=mode)
    run = make_run(settings, store, agent)
    run.start(split_request([{"role": "user", "content": "[[think]] hi"}]), {})
    reply = Reply()
    for event in run.events():
        reply.add(event)
    run.finish(reply.message(), reply.usage)
    run.close()
    assert reply.reasoning == ("Let me think. Echo it." if mode == "relay" else None)
    stored = store.load_history("agent:scripted:k", 10)[-1]
    assert stored == {"role": "assistant", "content": "hi"}
