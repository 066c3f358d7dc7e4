"""A turn whose write hangs, through real gunicorn on a real Redis: the client is told
the turn may not have been stored, and a retry with the same Idempotency-Key gets the
reply that landed after all, without a second run and without a second copy."""

from __future__ import annotations

import json
import pathlib
import uuid

import pytest

from chatcompat.sessions.redis_store import RedisStore
from tests.live.conftest import LiveServer
from tests.live.conftest import chat
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.redis_server import RedisServer
from tests.scripted_agent import open_gate
from tests.wire import check_completion
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live

SCRIPTED = "openclaw/scripted"
# Short, so three attempts at the turn write give up quickly while Redis is paused.
SOCKET_TIMEOUT = 0.5


@pytest.fixture
def redis(tmp_path: pathlib.Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def starts(server: LiveServer, key: str) -> int:
    return sum(1 for line in server.runs(key) if line["event"] == "start")


def test_a_hung_turn_write_may_not_be_stored_and_a_retry_replays_it_once(
    make_server, redis: RedisServer
) -> None:
    server = make_server(
        overrides={"sessions": {"store": f"{redis.url}?socket_timeout={SOCKET_TIMEOUT}"}}
    )
    name = f"erin-{uuid.uuid4().hex[:8]}"
    key = f"agent:scripted:openai-user:{name}"
    # A first turn loads the store's scripts into Redis, as any running gateway has.
    warm = chat(server.port, {"model": SCRIPTED, "user": name, "messages": [user("hello")]})
    assert warm.status == 200, warm.body()
    body = {"model": SCRIPTED, "user": name, "messages": [user("[[gate]] the answer")]}
    retry_key = {"Idempotency-Key": "order-7"}

    first = chat(server.port, body, retry_key, read=False)
    wait_until(lambda: starts(server, key) == 2, 10, "the keyed run to start")
    redis.pause()  # the run has its claim, lock and history: now the store hangs
    try:
        open_gate(str(server.agent_log))
        first.read_head()
        error = first.json()["error"]
    finally:
        redis.resume()
    assert first.status == 503
    assert error["code"] == "store_unavailable"
    assert "may not have been stored" in error["message"]
    assert "same Idempotency-Key" in error["message"]

    # Redis ran the queued writes on resuming; until a repeat sees them, 409 is the
    # honest answer (the first request's claim still stands).
    def replayed() -> object:
        exchange = chat(server.port, body, retry_key)
        if exchange.status == 409:
            assert exchange.json()["error"]["code"] == "idempotency_key_in_use"
            return None
        return exchange

    retry = wait_until(replayed, 20, "the retry to get the stored reply", pause=0.1)
    assert retry.status == 200, retry.body()
    assert retry.header("Idempotent-Replayed") == "true"
    assert retry.header("x-openclaw-session-key") == key
    completion = retry.json()
    check_completion(completion)
    assert completion["choices"][0]["message"]["content"] == "the answer"

    stream = chat(server.port, {**body, "stream": True}, retry_key)
    assert stream.status == 200 and stream.header("Idempotent-Replayed") == "true"
    chunks, _ = parse_sse(stream.body())
    assert stream_text(chunks) == "the answer"
    assert {chunk["id"] for chunk in chunks} == {completion["id"]}

    assert starts(server, key) == 2  # the warm-up and the keyed run: nothing ran again
    with RedisStore(redis.url) as store:
        turns = [turn.messages for turn in store.transcript(key)]
    assert turns == [
        [user("hello"), {"role": "assistant", "content": "hello"}],
        [user("[[gate]] the answer"), {"role": "assistant", "content": "the answer"}],
    ]
    log = server.log_path.read_text()
    assert "session store unavailable while storing a turn" in log
    assert json.dumps(retry_key["Idempotency-Key"]) not in log  # keys stay out of the log
