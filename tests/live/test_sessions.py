"""Sessions through real gunicorn workers: history kept across requests, concurrent
requests on one key serialized with no lost turn, and clients that go away (the run is
cancelled within a second, nothing of the turn is stored, the lock is free again)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from chatcompat import cli
from tests.live.conftest import chat
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import check_completion

pytestmark = pytest.mark.live

SCRIPTED = "openclaw/scripted"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def reply_of(text: str) -> dict:
    """What the scripted agent answers: the words, without the directive."""
    words = [word for word in text.split() if not word.startswith("[[")]
    return {"role": "assistant", "content": " ".join(words)}


def complete(port: int, text: str, headers: dict | None = None, **body) -> dict:
    exchange = chat(port, {"model": SCRIPTED, "messages": [user(text)], **body}, headers)
    assert exchange.status == 200, exchange.body()
    completion = exchange.json()
    check_completion(completion)
    exchange.close()
    return completion


def starts(server, key: str) -> list[dict]:
    return [line for line in server.runs(key) if line["event"] == "start"]


def test_user_conversation_keeps_its_whole_history(live, capsys):
    name = unique("Alice")
    key = f"agent:scripted:openai-user:{name.lower()}"
    texts = ["first question", "second question", "third question", "fourth question"]
    for index, text in enumerate(texts):
        # The client sends only the new message; the server remembers the rest.
        exchange = chat(live.port, {"model": SCRIPTED, "user": name, "messages": [user(text)]})
        assert exchange.status == 200
        assert exchange.header("x-openclaw-session-key") == key
        assert exchange.json()["choices"][0]["message"]["content"] == text
        run = starts(live, key)[index]
        expected = [m for earlier in texts[:index] for m in (user(earlier), reply_of(earlier))]
        assert run["history_count"] == len(expected)
        assert run["messages"] == [*expected, user(text)]

    # The CLI reads the same store as the running server.
    assert cli.main(["sessions", "--config", str(live.config_path), "show", key]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == key and shown["agent"] == "scripted" and shown["sticky"] is True
    assert [turn["messages"] for turn in shown["turns"]] == [
        [user(text), reply_of(text)] for text in texts
    ]


def test_concurrent_requests_on_one_session_are_serialized_and_none_is_lost(live):
    threads_count, per_thread = 8, 3
    session = unique("crowd")
    key = f"agent:scripted:{session}"
    results: list[tuple[str, int, dict, float, float, int]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        try:
            for round_ in range(per_thread):
                text = f"[[slow:20]] t{number}-r{round_} alpha beta"
                sent = time.monotonic()
                # A fresh connection each time: it may land on either worker.
                body = {"model": SCRIPTED, "messages": [user(text)]}
                exchange = chat(live.port, body, {"x-openclaw-session-key": session})
                answer = exchange.json()
                worker = live.worker_of(exchange.sock)
                with lock:
                    results.append((text, exchange.status, answer, sent, time.monotonic(), worker))
                exchange.close()
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert not any(thread.is_alive() for thread in workers), "a client thread hung"
    assert not failures, failures
    total = threads_count * per_thread
    assert len(results) == total
    for text, status, body, *_ in results:
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == reply_of(text)["content"]
    # The requests really competed: many were in flight at the same time...
    peak = max(sum(1 for r in results if r[3] <= at < r[4]) for _, _, _, at, _, _ in results)
    assert peak >= 4, peak
    # ...on both workers.
    assert len({r[5] for r in results}) == 2

    # Serialized: in the agent's log (appended by both workers in real time order) every
    # run of this session ends before the next one starts.
    lines = live.runs(key)
    assert [line["event"] for line in lines] == ["start", "end"] * total
    assert all(line["outcome"] == "finished" for line in lines if line["event"] == "end")

    # No lost turn: each run saw every earlier turn, and the transcript holds each turn
    # once, its user message followed by its reply.
    transcript = live.transcript(key)
    assert len(transcript) == total
    for index, run in enumerate(line for line in lines if line["event"] == "start"):
        history = [message for turn in transcript[:index] for message in turn]
        assert run["history_count"] == len(history)
        assert run["messages"] == [*history, transcript[index][0]]
    sent_texts = sorted(text for text, *_ in results)
    assert sorted(turn[0]["content"] for turn in transcript) == sent_texts
    for turn in transcript:
        assert turn == [user(turn[0]["content"]), reply_of(turn[0]["content"])]


def _assert_cancelled_soon(server, key: str, closed_at: float, runs: int) -> None:
    end = server.wait_run_ends(key, count=runs, timeout=5)[runs - 1]
    assert end["outcome"] in ("cancelled", "closed"), end
    assert end["at"] - closed_at < 1.0, f"cancelled {end['at'] - closed_at:.2f} s after close"


def _assert_lock_free_and_nothing_stored(server, key: str, header: str, stored: list) -> None:
    sent = time.monotonic()
    follow_up = complete(server.port, "next turn", {"x-openclaw-session-key": header})
    assert time.monotonic() - sent < 1.0  # the lock was released, no waiting for it
    assert follow_up["choices"][0]["message"]["content"] == "next turn"
    run = starts(server, key)[-1]
    assert run["messages"] == [*stored, user("next turn")]  # the abandoned turn is gone
    new_turn = [user("next turn"), reply_of("next turn")]
    assert server.transcript(key) == ([stored] if stored else []) + [new_turn]


def test_client_gone_mid_stream_cancels_the_run_and_stores_nothing(any_live):
    # gevent and gthread workers alike.
    header = unique("gone-mid-stream")
    key = f"agent:scripted:{header}"
    complete(any_live.port, "kept turn", {"x-openclaw-session-key": header})
    text = "[[slow:300]] a b c d e f g h i j"
    slow = {"model": SCRIPTED, "stream": True, "messages": [user(text)]}
    exchange = chat(any_live.port, slow, {"x-openclaw-session-key": header})
    assert exchange.status == 200
    data = (frame for frame, _ in exchange.frames() if frame != ": keepalive")
    received = [next(data) for _ in range(3)]  # role chunk, "a", " b"
    assert '"content":"a"' in received[1] and '"content":" b"' in received[2]
    closed_at = time.time()
    exchange.close()
    _assert_cancelled_soon(any_live, key, closed_at, runs=2)
    _assert_lock_free_and_nothing_stored(
        any_live, key, header, [user("kept turn"), reply_of("kept turn")]
    )


def test_client_gone_while_the_agent_is_silent_cancels_the_run(any_live):
    header = unique("gone-silent")
    key = f"agent:scripted:{header}"
    hang = {"model": SCRIPTED, "stream": True, "messages": [user("[[hang]]")]}
    exchange = chat(any_live.port, hang, {"x-openclaw-session-key": header})
    frames = exchange.frames()
    assert next(frames)[0].startswith("data: ")  # role chunk: no content yet
    assert next(frames)[0] == ": keepalive"
    closed_at = time.time()
    exchange.close()
    _assert_cancelled_soon(any_live, key, closed_at, runs=1)
    _assert_lock_free_and_nothing_stored(any_live, key, header, [])


def test_client_gone_during_a_silent_json_request_is_noticed_by_polling(live):
    # Nothing is written to a JSON client before the end: only polling its socket can
    # tell that it left.
    header = unique("gone-json-silent")
    key = f"agent:scripted:{header}"
    body = {"model": SCRIPTED, "messages": [user("[[hang]]")]}
    exchange = chat(live.port, body, {"x-openclaw-session-key": header}, read=False)
    wait_until(lambda: starts(live, key), 5, "the run to start")
    closed_at = time.time()
    exchange.close()
    _assert_cancelled_soon(live, key, closed_at, runs=1)
    _assert_lock_free_and_nothing_stored(live, key, header, [])


def test_client_gone_during_a_json_request_cancels_the_run(live):
    # SPEC 8: "on error or client abort nothing of it is stored". A JSON client waits for
    # the whole reply; if it leaves while the agent is still talking, the run must stop.
    header = unique("gone-json")
    key = f"agent:scripted:{header}"
    body = {"model": SCRIPTED, "messages": [user("[[slow:300]] a b c d e f g h i j")]}
    exchange = chat(live.port, body, {"x-openclaw-session-key": header}, read=False)
    wait_until(lambda: starts(live, key), 5, "the run to start")
    time.sleep(0.7)  # two or three words produced
    closed_at = time.time()
    exchange.close()
    _assert_cancelled_soon(live, key, closed_at, runs=1)
    _assert_lock_free_and_nothing_stored(live, key, header, [])


def test_client_that_gives_up_waiting_for_the_session_lock_is_never_run(live):
    header = unique("gone-waiting")
    key = f"agent:scripted:{header}"
    headers = {"x-openclaw-session-key": header}
    hang = {"model": SCRIPTED, "stream": True, "messages": [user("[[hang]]")]}
    holder = chat(live.port, hang, headers)
    next(holder.frames())  # the holder's run has the lock
    question = {"model": SCRIPTED, "messages": [user("abandoned question")]}
    waiter = chat(live.port, question, headers, read=False)
    time.sleep(0.5)  # queued behind the holder
    waiter.close()  # the client gives up
    time.sleep(0.3)
    holder.close()
    server_ends = live.wait_run_ends(key, count=1, timeout=5)
    assert server_ends[0]["outcome"] in ("cancelled", "closed")
    time.sleep(1.5)  # time for a waiter that missed its client's departure to run
    ran = [line["messages"][-1] for line in starts(live, key)]
    assert ran == [user("[[hang]]")], f"a request whose client had left was run: {ran}"
    assert live.transcript(key) == []


# Characters a response header cannot carry as they are (CR, LF, NUL, beyond Latin-1),
# and two that it could but a client could not send back intact (Latin-1, "%").
HEADER_UNSAFE_USERS = [
    "carol\r\nX-Injected: yes",
    "nul\x00byte",
    "日本語のユーザー",
    "zoë",
    "100% sure",
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", HEADER_UNSAFE_USERS)
def test_any_user_gets_a_session_key_it_can_send_back(live, name, stream):
    name = f"{name} {uuid.uuid4().hex[:6]}"
    keys = []
    for text in ("one", "two", "three"):
        # First by user, then by the key the gateway returned, then by user again.
        headers = {"x-openclaw-session-key": keys[0]} if text == "two" else {}
        body = {"model": SCRIPTED, "stream": stream, "messages": [user(text)]}
        if text != "two":
            body["user"] = name
        exchange = chat(live.port, body, headers)
        assert exchange.status == 200, exchange.body()
        keys.append(exchange.header("x-openclaw-session-key"))
        exchange.body()
        exchange.close()
    key = keys[0]
    assert keys == [key, key, key]
    assert key.startswith("agent:scripted:openai-user")
    assert all(" " <= c <= "~" for c in key), key  # printable ASCII only
    assert [run["history_count"] for run in starts(live, key)] == [0, 2, 4]
    assert len(live.transcript(key)) == 3


def test_a_session_key_header_outside_printable_ascii_is_refused_before_any_run(live):
    exchange = chat(
        live.port,
        {"model": SCRIPTED, "messages": [user("hi")]},
        {"x-openclaw-session-key": "zoë"},  # sent as Latin-1, as clients do
    )
    assert exchange.status == 400
    error = exchange.json()["error"]
    assert error["code"] == "invalid_session_key"
    assert error["param"] == "x-openclaw-session-key"
    assert starts(live, "agent:scripted:zoë") == []


# -- sessions.userKeys and reserved namespaces (issue 13) -----------------------------------


def test_with_user_keys_off_user_selects_no_session_and_is_passed_on(make_server, fake):
    """A constant ``user`` no longer grows one endless transcript (OpenClaw #126461)."""
    agents = [
        {"id": "main", "default": True, "backend": "echo"},
        {"id": "up", "backend": "openai", "baseUrl": fake.base_url, "model": "fake"},
    ]
    server = make_server(
        workers=1, overrides={"agents": {"list": agents}, "sessions": {"userKeys": False}}
    )
    keys = []
    for text in ("first", "second"):
        body = {"model": "openclaw/up", "user": "Constant", "messages": [user(text)]}
        exchange = chat(server.port, body)
        assert exchange.status == 200
        keys.append(exchange.header("x-openclaw-session-key"))
        sent = fake.chat_requests()[-1].body
        assert sent["user"] == "Constant"  # passed on as sent
        assert [m["content"] for m in sent["messages"]] == [text]  # no history
    assert keys[0] != keys[1] and all(key.startswith("agent:up:openai:") for key in keys)
    # The header still selects a session.
    header = {"x-openclaw-session-key": unique("k")}
    for text in ("one", "two"):
        body = {"model": "openclaw/up", "user": "Constant", "messages": [user(text)]}
        assert chat(server.port, body, header).status == 200
    assert [m["content"] for m in fake.chat_requests()[-1].body["messages"]] == [
        "one",
        "You said: one",
        "two",
    ]


@pytest.mark.parametrize("key", ["subagent:x", "agent:scripted:cron:nightly", "ACP:y"])
def test_a_session_key_in_a_reserved_namespace_is_400(live, key):
    m = unique("reserved")
    exchange = chat(live.port, {"model": SCRIPTED, "messages": [user(m)]},
                    {"x-openclaw-session-key": key})  # fmt: skip
    assert exchange.status == 400
    error = exchange.json()["error"]
    assert (error["code"], error["param"]) == ("reserved_session_key", "x-openclaw-session-key")
    assert not [line for line in live.runs() if m in json.dumps(line)]
