"""Redis-specific behaviour: the data model, expiry by Redis itself, the lock across
processes, error translation, an outage and the recovery from it, fork and gevent.

The contract shared with SQLite is in ``test_store.py``; these tests use a real
``redis-server`` (the ``redis_server`` fixture), which some of them stop or pause.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import time
import typing as t

import pytest

from chatcompat.sessions import KeyedReply
from chatcompat.sessions import StoredResponse
from chatcompat.sessions import StoreError
from chatcompat.sessions import StoreUnreachable
from chatcompat.sessions import open_store
from chatcompat.sessions.redis_store import RedisStore
from chatcompat.settings import RateLimit
from tests.conftest import AUTH
from tests.polling import wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.live  # a real redis-server (tests/redis_server.py)

KEY = "agent:main:openai-user:alice"
REPO = pathlib.Path(__file__).resolve().parents[2]
META, MSGS, TURNS, TURN_IDS, REPLIES, LOCK, RESPONSES, RESPONSE_IDS = (
    f"chatcompat:{{{KEY}}}:{part}"
    for part in (
        "meta",
        "msgs",
        "turns",
        "turn-ids",
        "replies",
        "lock",
        "responses",
        "response-ids",
    )
)
BY_ID = "chatcompat:responses:by-id"


def user(text: str) -> dict[str, t.Any]:
    return {"role": "user", "content": text}


@pytest.fixture
def server(redis_server: RedisServer) -> t.Iterator[RedisServer]:
    """The session's redis-server, running and empty; left running for the next test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.resume()
    redis_server.flush()
    yield redis_server
    redis_server.resume()
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()


@pytest.fixture
def store(server: RedisServer) -> t.Iterator[RedisStore]:
    with RedisStore(server.url) as store:
        yield store  # type: ignore[misc]


@pytest.fixture
def raw(server: RedisServer) -> t.Iterator[t.Any]:
    with server.client() as client:
        yield client


def append(store: RedisStore, key: str, *texts: str, ttl: float = 600) -> None:
    store.append_turn(key, "main", [user(text) for text in texts], sticky=True, ttl_seconds=ttl)


# -- open_store, no connection before use ------------------------------------------


def test_open_store_builds_a_lazy_redis_store() -> None:
    url = "redis://:hunter2-secret@127.0.0.1:1/3"  # port 1: nothing listens there
    store = open_store(url)
    assert isinstance(store, RedisStore)
    assert store._client is None  # nothing connected yet
    assert store.location == "redis://127.0.0.1:1/3"
    assert "hunter2" not in repr(store)
    store.close()


@pytest.mark.parametrize(
    "url",
    ["redis://:hunter2@host:port/0", "redis://:hunter2@host:6379/db", "redis://:hunter2@[::1"],
)
def test_malformed_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ValueError, match="must look like") as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


# -- data model ------------------------------------------------------------------------


def test_a_turn_is_one_set_of_keys_with_one_expiry(store: RedisStore, raw: t.Any) -> None:
    append(store, KEY, "hé", "b", ttl=100)
    append(store, KEY, "c", ttl=100)
    assert raw.type(META) == "hash" and raw.type(MSGS) == "list" and raw.type(TURNS) == "list"
    assert raw.lrange(MSGS, 0, -1) == [
        '{"role":"user","content":"hé"}',
        '{"role":"user","content":"b"}',
        '{"role":"user","content":"c"}',
    ]
    assert [bound.split(":")[1] for bound in raw.lrange(TURNS, 0, -1)] == ["2", "3"]
    meta = raw.hgetall(META)
    assert (meta["agent_id"], meta["sticky"], meta["turns"], meta["messages"]) == (
        "main",
        "1",
        "2",
        "3",
    )
    ttls = [raw.pttl(key) for key in (META, MSGS, TURNS)]
    assert max(ttls) - min(ttls) <= 5 and 99_000 < min(ttls) <= 100_000
    assert raw.zscore("chatcompat:sessions:by-updated", KEY) == int(meta["updated"])
    assert raw.zscore("chatcompat:sessions:by-expiry", KEY) == int(meta["expires"])


def test_timestamps_come_from_the_redis_clock(store: RedisStore, raw: t.Any) -> None:
    seconds, micros = raw.time()
    append(store, KEY, "q")
    info = store.get_session(KEY)
    assert info is not None
    assert 0 <= info.created - (seconds + micros / 1e6) < 1


def test_a_resent_turn_is_stored_once(store: RedisStore, raw: t.Any) -> None:
    """The guard that makes redis-py's resend after a broken connection safe."""
    for _ in range(2):
        store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60, turn_id="t-1")
    assert store.load_history(KEY, 100) == [user("q")]
    assert store.get_session(KEY).turns == 1  # type: ignore[union-attr]
    assert raw.smembers(TURN_IDS) == {"t-1"}
    assert 59_000 < raw.pttl(TURN_IDS) <= 60_000


def test_a_reply_expires_and_is_refreshed_with_its_session(store: RedisStore, raw: t.Any) -> None:
    keyed = KeyedReply("scope-1", "fp", {"id": "chatcmpl-1"})
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=100, keyed_reply=keyed)
    record = "chatcompat:idem:{scope-1}"
    assert raw.hget(record, "session") == KEY
    ttls = [raw.pttl(key) for key in (META, MSGS, TURNS, TURN_IDS, REPLIES, record)]
    assert max(ttls) - min(ttls) <= 5 and 99_000 < min(ttls) <= 100_000
    append(store, KEY, "q2", ttl=500)  # a later turn refreshes the reply with the session
    ttls = [raw.pttl(key) for key in (META, REPLIES, record)]
    assert max(ttls) - min(ttls) <= 5 and 499_000 < min(ttls) <= 500_000
    assert store.delete_session(KEY) is True
    assert raw.exists(record, REPLIES, TURN_IDS) == 0


def test_a_claim_has_its_own_short_expiry(store: RedisStore, raw: t.Any) -> None:
    assert store.claim_idempotency("scope-1", "run-1", "fp", 30) is None
    assert raw.hget("chatcompat:idem:{scope-1}", "owner") == "run-1"
    assert 29_000 < raw.pttl("chatcompat:idem:{scope-1}") <= 30_000
    raw.pexpire("chatcompat:idem:{scope-1}", 1000)
    assert store.claim_idempotency("scope-1", "run-1", "fp", 30) is None  # renewed
    assert 29_000 < raw.pttl("chatcompat:idem:{scope-1}") <= 30_000
    raw.delete("chatcompat:idem:{scope-1}")  # what Redis does when nobody renewed it
    assert store.claim_idempotency("scope-1", "run-2", "fp", 30) is None


def response(n: int) -> StoredResponse:
    return StoredResponse(f"resp_{n}", "key-1", {"id": f"resp_{n}"}, [{"id": f"msg_{n}"}])


def test_responses_live_in_one_hash_with_the_session_expiry(store: RedisStore, raw: t.Any) -> None:
    for n in range(50):
        store.append_turn(
            KEY, "main", [user("q")], sticky=True, ttl_seconds=100, response=response(n)
        )
    keys = raw.dbsize()
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=100, response=response(50))
    assert raw.dbsize() == keys  # no key per response
    assert raw.hlen(RESPONSES) == 51 and raw.scard(RESPONSE_IDS) == 51
    assert raw.hget(BY_ID, "resp_7") == KEY
    assert raw.hget(RESPONSES, "resp_7").split(":", 3)[:2] == ["8", "8"]  # turn, position
    append(store, KEY, "q2", ttl=500)  # a later turn moves the responses' expiry with it
    ttls = [raw.pttl(key) for key in (META, MSGS, RESPONSES)]
    assert max(ttls) - min(ttls) <= 5 and 499_000 < min(ttls) <= 500_000
    # The clean-up lists outlive the session (they go when it is deleted or pruned).
    assert raw.pttl(RESPONSE_IDS) == -1 and raw.pttl(BY_ID) == -1
    assert store.delete_session(KEY) is True
    assert raw.exists(RESPONSES, RESPONSE_IDS, BY_ID) == 0


def test_expired_responses_leave_nothing_once_pruned(store: RedisStore, raw: t.Any) -> None:
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=0.2, response=response(1))
    store.append_turn(
        "live", "main", [user("q")], sticky=True, ttl_seconds=60, response=response(2)
    )
    wait_until(lambda: raw.exists(META) == 0, 5, "the session to expire")
    assert raw.exists(RESPONSES) == 0  # expired by Redis with the session
    assert store.get_response("resp_1") is None  # the stale by-id entry finds nothing
    assert store.purge_expired() == 1
    assert raw.hkeys(BY_ID) == ["resp_2"] and raw.exists(RESPONSE_IDS) == 0
    assert store.get_response("resp_2") is not None


def test_a_fresh_start_drops_the_old_by_id_entries(store: RedisStore, raw: t.Any) -> None:
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=0.2, response=response(1))
    wait_until(lambda: raw.exists(META) == 0, 5, "the session to expire")
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60, response=response(2))
    assert raw.hgetall(BY_ID) == {"resp_2": KEY}
    assert raw.smembers(RESPONSE_IDS) == {"resp_2"}


def test_a_taken_response_id_stores_nothing(store: RedisStore, raw: t.Any) -> None:
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60, response=response(1))
    keys = sorted(raw.keys("*"))
    with pytest.raises(StoreError, match="taken"):
        store.append_turn(
            "other", "main", [user("q")], sticky=True, ttl_seconds=60, response=response(1)
        )
    assert sorted(raw.keys("*")) == keys
    assert raw.hget(BY_ID, "resp_1") == KEY


def test_a_huge_first_turn_fits(store: RedisStore) -> None:
    texts = [str(n) for n in range(12_000)]  # more values than Lua's unpack() can take
    append(store, KEY, *texts)
    assert store.load_history(KEY, 20_000) == [user(text) for text in texts]
    assert store.get_session(KEY).messages == 12_000  # type: ignore[union-attr]


# -- expiry by Redis -------------------------------------------------------------------


def test_expiry_is_redis_own(store: RedisStore, raw: t.Any) -> None:
    append(store, KEY, "q", ttl=0.2)
    assert store.acquire_lock(KEY, "run", 10)
    # Gone from Redis itself, without any purge: nothing of it is left to grow.
    wait_until(lambda: raw.exists(META, MSGS, TURNS) == 0, 5, "Redis to expire the session")
    assert raw.exists(LOCK) == 1  # the lock has its own expiry
    assert store.load_history(KEY, 100) is None
    # Only the index entries wait for a purge (or a listing) to drop them.
    assert raw.zcard("chatcompat:sessions:by-updated") == 1
    assert store.list_sessions() == []
    assert raw.zcard("chatcompat:sessions:by-updated") == 0
    assert raw.zcard("chatcompat:sessions:by-expiry") == 0


def test_purge_and_listing_drop_many_expired(store: RedisStore, raw: t.Any) -> None:
    for n in range(150):  # more than one purge batch
        append(store, f"gone{n}", "q", ttl=0.05)
    append(store, "live", "q")
    wait_until(lambda: not raw.exists("chatcompat:{gone149}:meta"), 5, "the TTLs to pass")
    assert store.purge_expired() == 150
    assert raw.zcard("chatcompat:sessions:by-expiry") == 1
    assert raw.zcard("chatcompat:sessions:by-updated") == 1
    for n in range(150):  # more than one listing batch
        append(store, f"gone{n}", "q", ttl=0.05)
    wait_until(lambda: not raw.exists("chatcompat:{gone149}:meta"), 5, "the TTLs to pass")
    assert [info.key for info in store.list_sessions()] == ["live"]
    assert raw.zcard("chatcompat:sessions:by-updated") == 1
    assert store.purge_expired() == 0


# -- locks -----------------------------------------------------------------------------


def test_lock_is_a_key_with_owner_and_expiry(store: RedisStore, raw: t.Any) -> None:
    assert store.acquire_lock(KEY, "run-1", 5)
    assert raw.get(LOCK) == "run-1" and 4_000 < raw.pttl(LOCK) <= 5_000
    store.release_lock(KEY, "run-2")
    assert raw.get(LOCK) == "run-1"
    assert store.acquire_lock(KEY, "run-1", 20)  # refresh by its owner
    assert raw.pttl(LOCK) > 19_000
    raw.pexpire(LOCK, 1)  # as if its host had died long ago
    wait_until(lambda: not raw.exists(LOCK), 5, "Redis to expire the lock")
    assert store.acquire_lock(KEY, "run-2", 5)
    store.release_lock(KEY, "run-1")
    assert raw.get(LOCK) == "run-2"
    store.release_lock(KEY, "run-2")
    assert raw.exists(LOCK) == 0


LOCK_ROUNDS = 30


def _locked_increments(url: str, name: str, rendezvous: str) -> None:
    """Run in a spawned process: read-modify-write a counter, only under the lock."""
    import redis

    pathlib.Path(rendezvous, name).touch()
    while len(os.listdir(rendezvous)) < 3:  # start together
        time.sleep(0.005)
    with RedisStore(url) as store, redis.Redis.from_url(url) as raw:
        for n in range(LOCK_ROUNDS):
            owner = f"{name}-{n}"
            deadline = time.monotonic() + 60
            while not store.acquire_lock(KEY, owner, 10):
                if time.monotonic() > deadline:
                    raise RuntimeError("the lock was never released")
                time.sleep(0.001)
            try:
                value = int(raw.get("counter") or 0)
                time.sleep(0.001)  # another process would break in here
                raw.set("counter", value + 1)
            finally:
                store.release_lock(KEY, owner)


def test_lock_excludes_other_processes(
    server: RedisServer, raw: t.Any, tmp_path: pathlib.Path
) -> None:
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_locked_increments, args=(server.url, name, str(rendezvous)))
        for name in ("p1", "p2", "p3")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert int(raw.get("counter")) == 3 * LOCK_ROUNDS  # no lost update: never two holders


# -- failed authentication ------------------------------------------------------------


def test_auth_counters_expire_in_redis(store: RedisStore, raw: t.Any) -> None:
    fails, lockout = "chatcompat:auth:{203.0.113.7}:fails", "chatcompat:auth:{203.0.113.7}:lockout"
    limit = RateLimit(max_attempts=2, window_seconds=30, lockout_seconds=60)
    store.record_auth_failure("203.0.113.7", limit)
    assert raw.zcard(fails) == 1 and 29_000 < raw.pttl(fails) <= 30_000
    store.record_auth_failure("203.0.113.7", limit)
    assert raw.exists(fails) == 0 and 59_000 < raw.pttl(lockout) <= 60_000
    raw.pexpire(lockout, 500)
    store.record_auth_failure("203.0.113.7", limit)  # during the lockout: ignored
    assert raw.pttl(lockout) <= 500 and raw.exists(fails) == 0
    assert 0 < store.auth_lockout_remaining("203.0.113.7") <= 0.5


# -- errors ----------------------------------------------------------------------------


def test_other_redis_errors_are_store_errors(store: RedisStore, raw: t.Any) -> None:
    raw.set(META, "not a hash")  # WRONGTYPE: a bug or a foreign writer, not an outage
    with pytest.raises(StoreError) as info:
        store.get_session(KEY)
    assert not isinstance(info.value, StoreUnreachable)
    assert "WRONGTYPE" in str(info.value)


def test_password_never_shows(server: RedisServer) -> None:
    url = f"redis://someone:hunter2-secret@127.0.0.1:{server.port}/0"  # no such user
    with RedisStore(url) as store:
        with pytest.raises(StoreUnreachable) as info:
            store.ping()
    assert "hunter2" not in str(info.value)
    assert f"redis://127.0.0.1:{server.port}/0" in str(info.value)


EVERY_CALL: list[tuple[str, t.Callable[[RedisStore], t.Any]]] = [
    ("ping", lambda s: s.ping()),
    ("load_history", lambda s: s.load_history(KEY, 10)),
    ("append_turn", lambda s: append(s, KEY, "lost?")),
    ("acquire_lock", lambda s: s.acquire_lock(KEY, "run", 10)),
    ("release_lock", lambda s: s.release_lock(KEY, "run")),
    ("purge_expired", lambda s: s.purge_expired()),
    ("list_sessions", lambda s: s.list_sessions()),
    ("get_session", lambda s: s.get_session(KEY)),
    ("transcript", lambda s: s.transcript(KEY)),
    ("delete_session", lambda s: s.delete_session("other")),
    ("auth_lockout_remaining", lambda s: s.auth_lockout_remaining("c")),
    ("record_auth_failure", lambda s: s.record_auth_failure("c", RateLimit())),
    ("clear_auth_failures", lambda s: s.clear_auth_failures("c")),
]


def test_redis_down_is_unavailable_fast_then_recovers(server: RedisServer) -> None:
    with RedisStore(server.url) as store:
        append(store, KEY, "before")
        server.kill()  # its data goes too (no persistence in the tests)
        for name, call in EVERY_CALL:
            started = time.monotonic()
            with pytest.raises(StoreUnreachable, match="unavailable"):
                call(store)
            assert time.monotonic() - started < 0.5, name
        server.start()  # same port, empty
        # The same store object, no restart: the broken pooled connections are replaced.
        for _, call in EVERY_CALL:
            call(store)
        assert store.load_history(KEY, 10) == [user("lost?")]  # stored once, complete


def test_restarted_redis_serves_the_next_call(server: RedisServer) -> None:
    with RedisStore(server.url) as store:
        store.ping()  # a pooled connection now exists
        server.stop()
        server.start()
        append(store, KEY, "first call after the restart")  # resent on a fresh connection
        assert store.load_history(KEY, 10) == [user("first call after the restart")]


def test_hung_redis_times_out(server: RedisServer) -> None:
    # URL options override the store's defaults (2 s) for redis-py's socket timeout.
    with RedisStore(server.url + "?socket_timeout=0.3") as store:
        store.ping()
        server.pause()  # the kernel still accepts; nothing answers
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnreachable):
                store.load_history(KEY, 10)
            assert time.monotonic() - started < 1.0  # no resend after a timeout
        finally:
            server.resume()
        assert store.load_history(KEY, 10) is None


# -- processes and greenlets ---------------------------------------------------------


def test_child_of_a_fork_makes_its_own_client(store: RedisStore) -> None:
    append(store, KEY, "parent")
    inherited = store._client
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            append(store, KEY, "child")
            mine = store._client is not inherited and store._pid == os.getpid()
            code = 0 if mine else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._client is inherited  # the parent's connections were left alone
    append(store, KEY, "parent again")
    assert store.load_history(KEY, 10) == [user("parent"), user("child"), user("parent again")]


GEVENT_WORKER = """
import json
import socket
import sys
import time

from gevent import monkey

monkey.patch_all()

import gevent

from chatcompat.sessions import StoreUnreachable
from chatcompat.sessions.redis_store import RedisStore

# A "Redis" that accepts connections and never answers.
mute = socket.socket()
mute.bind(("127.0.0.1", 0))
mute.listen(16)
hung = RedisStore(f"redis://127.0.0.1:{mute.getsockname()[1]}/0?socket_timeout=0.5")
live = RedisStore(sys.argv[1])
ticks, errors = [], []


def ticker():
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        ticks.append(time.monotonic())
        gevent.sleep(0.005)


def stuck():
    try:
        hung.ping()
    except StoreUnreachable:
        errors.append("unavailable")


def writer(n):
    for turn in range(5):
        message = {"role": "user", "content": f"{n}:{turn}"}
        live.append_turn(f"k{n}", "main", [message], sticky=True, ttl_seconds=60)


greenlets = [gevent.spawn(ticker)] + [gevent.spawn(stuck) for _ in range(5)]
greenlets += [gevent.spawn(writer, n) for n in range(40)]
gevent.joinall(greenlets, raise_error=True)
gaps = [b - a for a, b in zip(ticks, ticks[1:])]
turns = sorted({live.get_session(f"k{n}").turns for n in range(40)})
print(json.dumps({"max_gap": max(gaps), "errors": errors, "turns": turns}))
"""


def test_gevent_greenlets_run_while_redis_calls_wait(server: RedisServer) -> None:
    """Five greenlets wait on a mute Redis and 40 write to a real one: the rest runs."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_WORKER, server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == ["unavailable"] * 5
    assert result["turns"] == [5]
    # A ping that blocked the loop would stop the ticker for its whole 0.5 s timeout;
    # below that, a gap is only the loaded machine (0.17 s seen at 0.15 s margins).
    assert result["max_gap"] < 0.4


# -- the gateway on Redis ------------------------------------------------------------


def test_gateway_answers_503_while_redis_is_down_and_recovers(
    server: RedisServer, make_app: t.Callable[..., t.Any]
) -> None:
    client = make_app(session_store=server.url).test_client()
    body = {"model": "openclaw", "user": "alice", "messages": [user("one")]}
    assert client.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    assert client.get("/readyz").status_code == 200
    server.kill()
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert client.get("/readyz").status_code == 503
    assert time.monotonic() - started < 1.0
    server.start()
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert client.get("/readyz").status_code == 200


# -- the write path shared with Sentinel (redis_store._confirmed) ----------------------


def test_a_turn_write_loads_the_scripts_again_on_a_redis_that_forgot_them(
    store: RedisStore, raw: t.Any
) -> None:
    # A restarted or newly promoted primary has an empty script cache; turn writes go
    # as EVALSHA in a pipeline, which does not load scripts by itself.
    append(store, KEY, "one")
    raw.script_flush()
    append(store, KEY, "two")
    assert [turn.messages[0]["content"] for turn in store.transcript(KEY)] == ["one", "two"]


def test_ping_names_the_server_and_plain_urls_wait_for_no_replica(
    store: RedisStore, server: RedisServer
) -> None:
    assert store.ping() == f"127.0.0.1:{server.port}"
    assert store.min_replicas() == 0
