"""The SessionStore contract, run against every backend of the ``store`` fixture.

Time goes through ``store_clock`` (tests/sessions/conftest.py): a fake clock for
SQLite, so expiry is tested without waiting; real time with short TTLs for Redis,
whose expiry runs on its server's clock.
"""

from __future__ import annotations

import dataclasses
import threading
import typing as t

import pytest

from chatcompat.sessions import IdempotencyRecord
from chatcompat.sessions import KeyedReply
from chatcompat.sessions import ResponseRecord
from chatcompat.sessions import SessionStore
from chatcompat.sessions import StoredResponse
from chatcompat.sessions import StoreError
from chatcompat.settings import RateLimit

KEY = "agent:main:openai-user:alice"
TTL = 600.0


def user(text: str) -> dict[str, t.Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, t.Any]:
    return {"role": "assistant", "content": text}


def append(store: SessionStore, key: str, *messages: dict[str, t.Any], **kw: t.Any) -> bool:
    kw.setdefault("sticky", True)
    kw.setdefault("ttl_seconds", TTL)
    return store.append_turn(key, kw.pop("agent_id", "main"), list(messages), **kw)


def completion(text: str) -> dict[str, t.Any]:
    """The reply a request stores with its turn (its shape is the caller's business)."""
    return {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "openclaw",
        "choices": [{"index": 0, "message": assistant(text), "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


# -- sessions and history ----------------------------------------------------------


def test_ping(store: SessionStore) -> None:
    store.ping()


def test_new_session_is_absent_everywhere(store: SessionStore) -> None:
    assert store.load_history(KEY, 100) is None
    assert store.get_session(KEY) is None
    assert store.transcript(KEY) == []
    assert store.list_sessions() == []
    assert store.delete_session(KEY) is False


def test_history_keeps_order_and_limit(store: SessionStore) -> None:
    for n in range(3):
        append(store, KEY, user(f"q{n}"), assistant(f"a{n}"))
    everything = [m for n in range(3) for m in (user(f"q{n}"), assistant(f"a{n}"))]
    assert store.load_history(KEY, 100) == everything
    assert store.load_history(KEY, 6) == everything
    assert store.load_history(KEY, 3) == everything[-3:]
    assert store.load_history(KEY, 1) == [assistant("a2")]
    assert store.load_history(KEY, 0) == []


def test_messages_round_trip_exactly(store: SessionStore) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "héllo ✓ 日本"}]},
        {"role": "user", "content": "lone surrogate \ud800 and nul \x00 survive"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x": [1, 2.5, true]}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "", "n": 10**18, "f": -0.5},
    ]
    append(store, KEY, *messages)
    assert store.load_history(KEY, 100) == messages
    assert store.transcript(KEY)[0].messages == messages


def test_sessions_are_independent(store: SessionStore) -> None:
    append(store, KEY, user("mine"))
    append(store, KEY + "x", user("other"))
    assert store.load_history(KEY, 100) == [user("mine")]
    assert store.load_history(KEY + "x", 100) == [user("other")]


def test_session_info(store: SessionStore, store_clock: t.Any) -> None:
    before = store_clock()
    append(store, KEY, user("q"), assistant("a"), agent_id="main", sticky=True, ttl_seconds=100)
    append(store, "agent:main:openai:1", user("q"), sticky=False, ttl_seconds=100)
    append(store, KEY, user("q2"), user("q3"), assistant("a2"), sticky=True, ttl_seconds=100)
    after = store_clock()
    info = store.get_session(KEY)
    assert info is not None
    assert (info.key, info.agent_id, info.sticky, info.turns, info.messages) == (
        KEY,
        "main",
        True,
        2,
        5,
    )
    assert before <= info.created <= info.updated <= after
    assert info.expires == pytest.approx(info.updated + 100, abs=0.01)
    stateless = store.get_session("agent:main:openai:1")
    assert stateless is not None and stateless.sticky is False


def test_transcript_groups_turns(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q1"), assistant("a1"))
    store_clock.advance(0.01)
    append(store, KEY, user("q2"), user("q2b"), assistant("a2"))
    turns = store.transcript(KEY)
    assert [turn.messages for turn in turns] == [
        [user("q1"), assistant("a1")],
        [user("q2"), user("q2b"), assistant("a2")],
    ]
    assert turns[0].created < turns[1].created


def test_list_sessions_most_recent_first(store: SessionStore, store_clock: t.Any) -> None:
    for key in ("k1", "k2", "k3"):
        append(store, key, user(key))
        store_clock.advance(0.01)
    append(store, "k1", user("again"))
    assert [info.key for info in store.list_sessions()] == ["k1", "k3", "k2"]
    assert [info.key for info in store.list_sessions(limit=2)] == ["k1", "k3"]


def test_delete_session(store: SessionStore) -> None:
    append(store, KEY, user("q"))
    append(store, "other", user("q"))
    assert store.delete_session(KEY) is True
    assert store.load_history(KEY, 100) is None
    assert store.get_session(KEY) is None
    assert store.delete_session(KEY) is False
    assert store.load_history("other", 100) == [user("q")]
    append(store, KEY, user("new"))
    assert store.load_history(KEY, 100) == [user("new")]
    assert store.get_session(KEY).turns == 1  # type: ignore[union-attr]


# -- atomicity ---------------------------------------------------------------------


def test_unencodable_turn_stores_nothing(store: SessionStore) -> None:
    with pytest.raises(StoreError):
        append(store, KEY, user("fine"), {"role": "user", "content": object()})
    assert store.load_history(KEY, 100) is None
    assert store.get_session(KEY) is None

    append(store, KEY, user("q1"), assistant("a1"))
    with pytest.raises(StoreError):
        append(store, KEY, user("fine"), {"role": "user", "content": float("nan")})
    with pytest.raises(StoreError):
        append(store, KEY)  # an empty turn
    assert store.load_history(KEY, 100) == [user("q1"), assistant("a1")]
    info = store.get_session(KEY)
    assert info is not None and (info.turns, info.messages) == (1, 2)


# -- idempotent writes -------------------------------------------------------------


def test_the_same_turn_id_is_stored_once(store: SessionStore) -> None:
    assert append(store, KEY, user("q1"), assistant("a1"), turn_id="t1") is True
    assert append(store, KEY, user("q1"), assistant("a1"), turn_id="t1") is False
    assert append(store, KEY, user("q2"), turn_id="t2") is True
    assert append(store, KEY, user("q1"), assistant("a1"), turn_id="t1") is False  # not the last
    assert [turn.messages for turn in store.transcript(KEY)] == [
        [user("q1"), assistant("a1")],
        [user("q2")],
    ]
    info = store.get_session(KEY)
    assert info is not None and (info.turns, info.messages) == (2, 3)
    assert append(store, "other", user("q1"), turn_id="t1") is True  # ids are per session
    assert append(store, KEY, user("q3")) is True  # no id given: a fresh one


def test_claim_then_finished_reply(make_store: t.Callable[[], SessionStore]) -> None:
    worker1, worker2 = make_store(), make_store()
    assert worker1.claim_idempotency("scope-1", "run-1", "fp", 30) is None
    running = worker2.claim_idempotency("scope-1", "run-2", "fp", 30)
    assert running == IdempotencyRecord("fp", None, None) and running.running
    assert worker1.claim_idempotency("scope-1", "run-1", "fp", 30) is None  # refreshed
    assert worker2.claim_idempotency("scope-2", "run-2", "fp2", 30) is None  # independent

    reply = completion("a1")
    keyed = KeyedReply("scope-1", "fp", reply)
    assert append(worker1, KEY, user("q1"), assistant("a1"), turn_id="t1", keyed_reply=keyed)
    finished = worker2.claim_idempotency("scope-1", "run-3", "other-fp", 30)
    assert finished == IdempotencyRecord("fp", KEY, reply) and not finished.running
    worker1.release_idempotency("scope-1", "run-1")  # a finished reply is never released
    assert worker2.claim_idempotency("scope-1", "run-1", "fp", 30) == finished


def test_a_finished_scope_is_not_stored_again(store: SessionStore) -> None:
    keyed = KeyedReply("scope-1", "fp", completion("a1"))
    assert append(store, KEY, user("q"), assistant("a1"), turn_id="t1", keyed_reply=keyed)
    # A second run of the same request (its claim had expired): a new turn id, same scope.
    again = KeyedReply("scope-1", "fp", completion("a2"))
    assert append(store, KEY, user("q"), assistant("a2"), turn_id="t2", keyed_reply=again) is False
    assert [turn.messages for turn in store.transcript(KEY)] == [[user("q"), assistant("a1")]]
    assert store.claim_idempotency("scope-1", "run", "fp", 30) == IdempotencyRecord(
        "fp", KEY, completion("a1")
    )


def test_a_stateless_reply_remembers_its_session(store: SessionStore) -> None:
    stateless = "agent:main:openai:8c6f"
    keyed = KeyedReply("scope-1", "fp", completion("a"))
    append(store, stateless, user("q"), assistant("a"), sticky=False, keyed_reply=keyed)
    record = store.claim_idempotency("scope-1", "run", "fp", 30)
    assert record is not None and record.session_key == stateless


def test_release_drops_only_the_owners_claim(store: SessionStore) -> None:
    assert store.claim_idempotency("scope-1", "run-1", "fp", 30) is None
    store.release_idempotency("scope-1", "run-2")
    assert store.claim_idempotency("scope-1", "run-2", "fp", 30) is not None
    store.release_idempotency("scope-1", "run-1")
    assert store.claim_idempotency("scope-1", "run-2", "fp2", 30) is None  # free again
    store.release_idempotency("never-claimed", "run-1")


def test_records_go_with_their_session(store: SessionStore) -> None:
    keyed = KeyedReply("scope-1", "fp", completion("a"))
    append(store, KEY, user("q"), assistant("a"), keyed_reply=keyed)
    append(store, "other", user("q"), keyed_reply=KeyedReply("scope-2", "fp", completion("b")))
    assert store.delete_session(KEY) is True
    assert store.claim_idempotency("scope-1", "run", "fp", 30) is None  # a fresh claim
    assert store.claim_idempotency("scope-2", "run", "fp", 30) is not None


def test_unencodable_reply_stores_nothing(store: SessionStore) -> None:
    keyed = KeyedReply("scope-1", "fp", {"bad": float("nan")})
    with pytest.raises(StoreError):
        append(store, KEY, user("q"), keyed_reply=keyed)
    assert store.get_session(KEY) is None
    assert store.claim_idempotency("scope-1", "run", "fp", 30) is None


# -- expiry ------------------------------------------------------------------------


def test_expired_session_is_absent_everywhere(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q"), ttl_seconds=0.05)
    append(store, "live", user("q"))
    store_clock.advance(0.1)
    assert store.load_history(KEY, 100) is None
    assert store.get_session(KEY) is None
    assert store.transcript(KEY) == []
    assert [info.key for info in store.list_sessions()] == ["live"]
    assert store.delete_session(KEY) is False


def test_expired_session_starts_afresh(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("old"), assistant("old"), ttl_seconds=0.05)
    first = store.get_session(KEY)
    store_clock.advance(0.1)
    append(store, KEY, user("new"))
    assert store.load_history(KEY, 100) == [user("new")]
    info = store.get_session(KEY)
    assert info is not None and first is not None
    assert (info.turns, info.messages) == (1, 1)
    assert info.created > first.created
    assert len(store.transcript(KEY)) == 1


def test_append_refreshes_ttl(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q1"), ttl_seconds=0.5)
    store_clock.advance(0.3)
    append(store, KEY, user("q2"), ttl_seconds=0.5)
    store_clock.advance(0.3)  # 0.6 s after the first turn, 0.3 s after the second
    assert store.load_history(KEY, 100) == [user("q1"), user("q2")]
    store_clock.advance(0.3)
    assert store.load_history(KEY, 100) is None


def test_purge_expired(store: SessionStore, store_clock: t.Any) -> None:
    append(store, "gone1", user("q"), ttl_seconds=0.05)
    append(store, "gone2", user("q"), user("q"), ttl_seconds=0.05)
    append(store, "live", user("q"))
    store_clock.advance(0.1)
    assert store.purge_expired() == 2
    assert store.purge_expired() == 0
    assert [info.key for info in store.list_sessions()] == ["live"]
    assert store.load_history("live", 100) == [user("q")]


# -- locks -------------------------------------------------------------------------


def test_lock_excludes_other_owners(make_store: t.Callable[[], SessionStore]) -> None:
    worker1, worker2 = make_store(), make_store()
    assert worker1.acquire_lock(KEY, "run-1", 10) is True
    assert worker2.acquire_lock(KEY, "run-2", 10) is False
    assert worker1.acquire_lock(KEY, "run-2", 10) is False
    assert worker2.acquire_lock("other", "run-2", 10) is True


def test_lock_is_reentrant_and_refreshes(store: SessionStore, store_clock: t.Any) -> None:
    assert store.acquire_lock(KEY, "run-1", 0.3)
    store_clock.advance(0.2)
    assert store.acquire_lock(KEY, "run-1", 0.3)  # now runs until ~0.5 s
    store_clock.advance(0.2)
    assert store.acquire_lock(KEY, "run-2", 10) is False
    store_clock.advance(0.2)
    assert store.acquire_lock(KEY, "run-2", 10) is True


def test_expired_lock_is_free(store: SessionStore, store_clock: t.Any) -> None:
    assert store.acquire_lock(KEY, "run-1", 0.05)
    store_clock.advance(0.1)
    assert store.acquire_lock(KEY, "run-2", 10) is True
    assert store.acquire_lock(KEY, "run-1", 10) is False


def test_only_the_owner_releases(store: SessionStore) -> None:
    assert store.acquire_lock(KEY, "run-1", 10)
    store.release_lock(KEY, "run-2")
    assert store.acquire_lock(KEY, "run-2", 10) is False
    store.release_lock(KEY, "run-1")
    assert store.acquire_lock(KEY, "run-2", 10) is True
    store.release_lock(KEY, "run-1")  # no longer the owner: no effect
    assert store.acquire_lock(KEY, "run-3", 10) is False
    store.release_lock("never-locked", "run-1")


# -- failed authentication ---------------------------------------------------------


def test_one_attempt_locks_out(make_store: t.Callable[[], SessionStore]) -> None:
    worker1, worker2 = make_store(), make_store()
    limit = RateLimit(max_attempts=1, window_seconds=60, lockout_seconds=300)
    assert worker1.auth_lockout_remaining("203.0.113.7") == 0.0
    worker1.record_auth_failure("203.0.113.7", limit)
    remaining = worker2.auth_lockout_remaining("203.0.113.7")
    assert 299 < remaining <= 300
    assert worker2.auth_lockout_remaining("203.0.113.8") == 0.0


def test_failures_count_within_the_window(store: SessionStore, store_clock: t.Any) -> None:
    limit = RateLimit(max_attempts=3, window_seconds=0.3, lockout_seconds=60)
    store.record_auth_failure("c", limit)
    store.record_auth_failure("c", limit)
    assert store.auth_lockout_remaining("c") == 0.0
    store_clock.advance(0.4)  # both slide out of the window
    store.record_auth_failure("c", limit)
    store.record_auth_failure("c", limit)
    assert store.auth_lockout_remaining("c") == 0.0
    store.record_auth_failure("c", limit)
    assert store.auth_lockout_remaining("c") > 59


def test_lockout_ends(store: SessionStore, store_clock: t.Any) -> None:
    limit = RateLimit(max_attempts=2, window_seconds=60, lockout_seconds=0.1)
    store.record_auth_failure("c", limit)
    store.record_auth_failure("c", limit)
    assert 0 < store.auth_lockout_remaining("c") <= 0.1
    store_clock.advance(0.15)
    assert store.auth_lockout_remaining("c") == 0.0
    store.record_auth_failure("c", limit)  # the count started again from zero
    assert store.auth_lockout_remaining("c") == 0.0


def test_clear_auth_failures(store: SessionStore) -> None:
    limit = RateLimit(max_attempts=2, window_seconds=60, lockout_seconds=60)
    store.record_auth_failure("c", limit)
    store.clear_auth_failures("c")
    store.record_auth_failure("c", limit)
    assert store.auth_lockout_remaining("c") == 0.0  # the first failure was forgotten
    store.record_auth_failure("c", limit)
    assert store.auth_lockout_remaining("c") > 0
    store.clear_auth_failures("c")
    assert store.auth_lockout_remaining("c") == 0.0
    store.clear_auth_failures("never-seen")


# -- lifecycle ---------------------------------------------------------------------


def test_shared_between_instances(make_store: t.Callable[[], SessionStore]) -> None:
    worker1, worker2 = make_store(), make_store()
    append(worker1, KEY, user("q"))
    append(worker2, KEY, assistant("a"))
    assert worker1.load_history(KEY, 100) == [user("q"), assistant("a")]


def test_usable_after_close(store: SessionStore) -> None:
    append(store, KEY, user("q"))
    store.close()
    store.close()
    assert store.load_history(KEY, 100) == [user("q")]
    with store as same:
        append(same, KEY, assistant("a"))
    assert store.load_history(KEY, 100) == [user("q"), assistant("a")]


# -- stored responses (SPEC 15) ----------------------------------------------------


def stored(n: int, owner: str = "key-1") -> StoredResponse:
    """A Responses API response to store with a turn (its shape is the caller's business)."""
    return StoredResponse(
        id=f"resp_{n:032x}",
        owner=owner,
        document={"id": f"resp_{n:032x}", "object": "response", "output": [{"n": n, "é": "✓"}]},
        input_items=[{"id": f"msg_{n}", "type": "message", "role": "user", "content": "q"}],
    )


def test_a_response_is_stored_with_its_turn(store: SessionStore, store_clock: t.Any) -> None:
    before = store_clock()
    append(store, KEY, user("q1"), assistant("a1"), agent_id="main", response=stored(1))
    after = store_clock()
    record = store.get_response(stored(1).id)
    assert record == ResponseRecord(
        id=stored(1).id,
        session_key=KEY,
        agent_id="main",
        owner="key-1",
        position=2,
        latest=True,
        created=record.created if record else 0.0,
        document=stored(1).document,
        input_items=stored(1).input_items,
    )
    assert record is not None and before <= record.created <= after
    assert store.get_response("resp_" + "f" * 32) is None
    assert store.response_ids(KEY) == [stored(1).id]
    assert store.response_ids("other") == []


def test_no_response_without_its_turn(store: SessionStore) -> None:
    with pytest.raises(StoreError):
        append(store, KEY, {"role": "user", "content": object()}, response=stored(1))
    with pytest.raises(StoreError):
        append(store, KEY, response=stored(1))  # an empty turn
    bad = dataclasses.replace(stored(1), document={"x": float("nan")})
    with pytest.raises(StoreError):
        append(store, KEY, user("q"), response=bad)  # the response fails: no turn either
    assert store.get_response(stored(1).id) is None
    assert store.get_session(KEY) is None

    # A resent turn stores its response once; a no-op append stores none.
    assert append(store, KEY, user("q1"), turn_id="t1", response=stored(1)) is True
    assert append(store, KEY, user("q1"), turn_id="t1", response=stored(1)) is False
    assert append(store, KEY, user("q1"), turn_id="t1", response=stored(2)) is False
    keyed = KeyedReply("scope-1", "fp", completion("a"))
    assert append(store, KEY, user("q2"), keyed_reply=keyed, response=stored(3)) is True
    assert append(store, KEY, user("q2"), keyed_reply=keyed, response=stored(4)) is False
    assert store.get_response(stored(2).id) is None
    assert store.get_response(stored(4).id) is None
    assert store.response_ids(KEY) == [stored(1).id, stored(3).id]
    info = store.get_session(KEY)
    assert info is not None and (info.turns, info.messages) == (2, 2)


def test_a_taken_response_id_fails_the_turn(store: SessionStore) -> None:
    append(store, KEY, user("q1"), response=stored(1))
    with pytest.raises(StoreError):
        append(store, "other", user("q2"), response=stored(1))
    assert store.get_session("other") is None
    record = store.get_response(stored(1).id)
    assert record is not None and record.session_key == KEY


def test_position_and_latest_across_appends(store: SessionStore) -> None:
    append(store, KEY, user("q1"), assistant("a1"), response=stored(1))
    append(store, KEY, user("q2"), user("q2b"), assistant("a2"), response=stored(2))
    first, second = store.get_response(stored(1).id), store.get_response(stored(2).id)
    assert first is not None and (first.position, first.latest) == (2, False)
    assert second is not None and (second.position, second.latest) == (5, True)
    append(store, KEY, user("chat"), assistant("completion"))  # the other endpoint's turn
    second = store.get_response(stored(2).id)
    assert second is not None and (second.position, second.latest) == (5, False)
    # The history up to a response is its first ``position`` messages.
    assert store.load_history(KEY, 100, upto=first.position) == [user("q1"), assistant("a1")]
    assert store.load_history(KEY, 2, upto=second.position) == [user("q2b"), assistant("a2")]
    append(store, "other", user("elsewhere"), response=stored(3))
    assert store.get_response(stored(2).id).latest is False  # type: ignore[union-attr]
    assert store.get_response(stored(3).id).latest is True  # type: ignore[union-attr]


def test_load_history_upto_and_limit(store: SessionStore) -> None:
    everything = [user(f"m{n}") for n in range(7)]
    append(store, KEY, *everything[:3])
    append(store, KEY, *everything[3:4])
    append(store, KEY, *everything[4:])
    assert store.load_history(KEY, 100, upto=7) == everything
    assert store.load_history(KEY, 100, upto=100) == everything
    assert store.load_history(KEY, 100, upto=4) == everything[:4]
    assert store.load_history(KEY, 3, upto=4) == everything[1:4]
    assert store.load_history(KEY, 2, upto=5) == everything[3:5]  # across a turn boundary
    assert store.load_history(KEY, 1, upto=1) == everything[:1]
    assert store.load_history(KEY, 3, upto=0) == []
    assert store.load_history(KEY, 0, upto=4) == []
    assert store.load_history("other", 3, upto=4) is None


def test_a_response_expires_with_its_session(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q"), ttl_seconds=0.2, response=stored(1))
    append(store, "live", user("q"), response=stored(2))
    store_clock.advance(0.3)
    assert store.get_response(stored(1).id) is None
    assert store.response_ids(KEY) == []
    assert store.delete_response(stored(1).id) is False
    assert store.get_response(stored(2).id) is not None


def test_a_refreshed_session_keeps_its_responses(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q1"), ttl_seconds=0.5, response=stored(1))
    store_clock.advance(0.3)
    append(store, KEY, user("q2"), ttl_seconds=0.5)  # no response: still refreshes
    store_clock.advance(0.3)  # 0.6 s after the response, 0.3 s after the refresh
    record = store.get_response(stored(1).id)
    assert record is not None and record.latest is False
    store_clock.advance(0.3)
    assert store.get_response(stored(1).id) is None


def test_a_session_that_starts_afresh_drops_its_responses(
    store: SessionStore, store_clock: t.Any
) -> None:
    append(store, KEY, user("old"), ttl_seconds=0.05, response=stored(1))
    store_clock.advance(0.1)
    append(store, KEY, user("new"), response=stored(2))
    assert store.get_response(stored(1).id) is None
    second = store.get_response(stored(2).id)
    assert second is not None and (second.position, second.latest) == (1, True)
    assert store.response_ids(KEY) == [stored(2).id]


def test_delete_session_and_purge_drop_responses(store: SessionStore, store_clock: t.Any) -> None:
    append(store, KEY, user("q"), response=stored(1))
    append(store, "gone", user("q"), ttl_seconds=0.05, response=stored(2))
    append(store, "live", user("q"), response=stored(3))
    assert store.delete_session(KEY) is True
    assert store.get_response(stored(1).id) is None
    store_clock.advance(0.1)
    assert store.purge_expired() == 1
    assert store.get_response(stored(2).id) is None
    assert store.get_response(stored(3).id) is not None
    append(store, KEY, user("again"))  # a new session under the old key: still no response
    assert store.get_response(stored(1).id) is None
    assert store.delete_response(stored(1).id) is False


def test_delete_response(store: SessionStore) -> None:
    append(store, KEY, user("q1"), assistant("a1"), response=stored(1))
    append(store, KEY, user("q2"), response=stored(2))
    assert store.delete_response(stored(1).id) is True
    assert store.get_response(stored(1).id) is None
    assert store.delete_response(stored(1).id) is False
    assert store.delete_response("resp_unknown") is False
    # The turn stays; the other response is untouched.
    assert store.load_history(KEY, 100) == [user("q1"), assistant("a1"), user("q2")]
    assert store.response_ids(KEY) == [stored(2).id]
    second = store.get_response(stored(2).id)
    assert second is not None and (second.position, second.latest) == (3, True)


def test_responses_are_shared_between_instances(
    make_store: t.Callable[[], SessionStore],
) -> None:
    host1, host2 = make_store(), make_store()
    append(host1, KEY, user("q"), response=stored(1))
    record = host2.get_response(stored(1).id)
    assert record is not None and record.document == stored(1).document
    assert host2.delete_response(stored(1).id) is True
    assert host1.get_response(stored(1).id) is None


def test_racing_appends_keep_positions_consistent(
    make_store: t.Callable[[], SessionStore],
) -> None:
    hosts = [make_store(), make_store()]
    turns = 15

    def run(host: int) -> None:
        for n in range(turns):
            number = host * 1000 + n
            messages = [user(f"q{number}")] + [assistant(f"a{number}")] * (n % 2)
            append(hosts[host], KEY, *messages, response=stored(number))

    threads = [threading.Thread(target=run, args=(host,)) for host in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [hosts[0].get_response(stored(h * 1000 + n).id) for h in (0, 1) for n in range(turns)]
    assert all(record is not None for record in records)
    present = sorted((r for r in records if r is not None), key=lambda r: r.position)
    info = hosts[1].get_session(KEY)
    assert info is not None and info.turns == 2 * turns
    assert [r.latest for r in present] == [False] * (2 * turns - 1) + [True]
    assert present[-1].position == info.messages
    previous = 0
    for record in present:
        number = record.document["output"][0]["n"]
        size = 1 + (number % 1000) % 2
        assert record.position - previous == size  # no other turn in between
        history = hosts[1].load_history(KEY, size, upto=record.position)
        assert history is not None and history[0] == user(f"q{number}")
        previous = record.position
