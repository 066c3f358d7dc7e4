"""Chat Completions on the wire: every shape passes OpenAI's published schemas; the
stream built on a run ends with an error frame when the run fails after the first byte."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from chatcompat.history import split_request
from chatcompat.protocol import chat_completions as protocol
from chatcompat.protocol.chat_completions import replay_response
from chatcompat.protocol.chat_completions import replay_stream
from chatcompat.protocol.sse import data_frame
from chatcompat.sessions.base import StoreError
from chatcompat.sessions.base import StoreUnreachable
from tests.conftest import AUTH
from tests.run_support import SCRIPTED_AGENT
from tests.run_support import LostReplies
from tests.run_support import make_run
from tests.wire import check_chunk
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse

pytestmark = pytest.mark.usefixtures("quick_turn_write_retries")


def test_completion_passes_the_schema_with_and_without_tool_calls():
    usage = protocol.usage_dict(1, 2, 3)
    check_completion(
        protocol.completion(
            id="chatcmpl-x",
            created=1,
            model="m",
            content="hi",
            tool_calls=None,
            finish_reason="stop",
            usage=usage,
        )
    )
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = protocol.completion(
        id="chatcmpl-x",
        created=1,
        model="m",
        content=None,
        tool_calls=calls,
        finish_reason="tool_calls",
        usage=usage,
    )
    check_completion(body)
    assert body["choices"][0]["message"]["tool_calls"] == calls


def test_chunk_encoder_output_is_valid_json_and_schema():
    encoder = protocol.ChunkEncoder("chatcmpl-1", 1700000000, 'mo"del\u00e9')
    frames = [
        encoder.role(),
        encoder.content('quote " and \u2603 and \n'),
        encoder.finish("length"),
        encoder.tool_call(0, "c1", "f", ""),
        encoder.tool_call(0, None, None, '{"a"'),
        encoder.delta({"content": "x"}),
        encoder.usage(protocol.usage_dict(1, 2, 3)),
    ]
    chunks = [json.loads(frame) for frame in frames]
    for chunk in chunks:
        check_chunk(chunk)
        assert (chunk["id"], chunk["created"], chunk["model"]) == (
            "chatcmpl-1",
            1700000000,
            'mo"del\u00e9',
        )
    assert chunks[1]["choices"][0]["delta"] == {"content": 'quote " and \u2603 and \n'}
    assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}
    assert chunks[3]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    assert chunks[4]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"a"'}}
    ]
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["total_tokens"] == 3


def test_completion_ids_are_unique_and_prefixed():
    ids = {protocol.completion_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("chatcmpl-") and len(i) == 33 for i in ids)


def test_a_lone_surrogate_from_an_agent_goes_out_as_a_json_escape():
    frame = data_frame(protocol.ChunkEncoder("c", 1, "m").content("bad \ud800 text \u00e9"))
    payload = frame.decode("utf-8")[len("data: ") : -2]  # valid UTF-8
    assert json.loads(payload)["choices"][0]["delta"]["content"] == "bad \ud800 text \u00e9"


# -- the stream on a run ---------------------------------------------------------------


def test_stream_generator_closed_by_the_server_cancels_and_stores_nothing(settings, store):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "[[slow:100]] a b c d e f"}]), {})
    body = protocol.stream(run, include_usage=False)
    assert next(body).startswith(b"data: ")
    body.close()  # what gunicorn does when a write to the client fails
    assert run._cancel.is_set
    assert store.load_history("agent:scripted:k", 10) is None
    assert store.acquire_lock("agent:scripted:k", "other", 5)


def test_a_stream_whose_turn_write_stays_unknown_ends_with_that_error(settings, store):
    run = make_run(settings, LostReplies(store, failures=99), SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})
    frames = list(protocol.stream(run, include_usage=False))
    assert b"may not have been stored" in frames[-2] and b"store_unavailable" in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"


def test_store_failing_at_the_end_is_an_error_frame_not_a_finish(settings, store, monkeypatch):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})

    def broken(*args, **kwargs):
        raise StoreUnreachable("gone")

    monkeypatch.setattr(store, "append_turn", broken)
    frames = list(protocol.stream(run, include_usage=True))
    assert b"store_unavailable" in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert not any(b'"finish_reason":"stop"' in f for f in frames)


@pytest.mark.live  # waits out real timeouts
def test_the_run_timeout_holds_while_events_keep_coming(settings, store):
    quick = dataclasses.replace(SCRIPTED_AGENT, timeout_seconds=0.3)
    run = make_run(settings, store, quick)
    run.start(split_request([{"role": "user", "content": "[[slow:5]] " + "w " * 400}]), {})
    frames = []
    started = time.monotonic()
    for frame in protocol.stream(run, include_usage=False):
        frames.append(frame)
        time.sleep(0.02)  # a slow reader: the queue is never empty
    assert time.monotonic() - started < 2.0
    assert b'"code":"timeout"' in frames[-2] and frames[-1] == b"data: [DONE]\n\n"
    assert store.load_history("agent:scripted:k", 10) is None


def test_any_store_error_at_the_end_is_an_error_frame(settings, store, monkeypatch):
    run = make_run(settings, store, SCRIPTED_AGENT)
    run.start(split_request([{"role": "user", "content": "a b"}]), {})

    def broken(*args, **kwargs):
        raise StoreError("cannot encode")

    monkeypatch.setattr(store, "append_turn", broken)
    frames = list(protocol.stream(run, include_usage=False))
    assert b'"code":"internal_error"' in frames[-2]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert store.acquire_lock("agent:scripted:k", "other", 5)  # released


@pytest.mark.parametrize("stream", [False, True])
def test_a_replay_answers_in_the_form_asked_for_and_says_so(stream):
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "openclaw",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    response = replay_response(reply, stream, include_usage=True)
    assert response.headers["Idempotent-Replayed"] == "true"
    if not stream:
        assert response.mimetype == "application/json" and json.loads(response.data) == reply
        check_completion(json.loads(response.data))
        return
    assert response.mimetype == "text/event-stream"
    chunks, _ = parse_sse(response.get_data())
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-1"}
    assert chunks[-1]["usage"] == reply["usage"]


def test_a_replayed_stream_carries_what_the_reply_had():
    reply = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "openclaw",
        "service_tier": "default",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "", "refusal": "I can't."},
                "logprobs": {
                    "content": None,
                    "refusal": [{"token": "I", "logprob": -0.1, "bytes": [73], "top_logprobs": []}],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    chunks, _ = parse_sse(b"".join(replay_stream(reply, include_usage=False)))
    assert {(c["service_tier"], c["system_fingerprint"]) for c in chunks} == {("default", "fp_1")}
    refusals = [c["choices"][0] for c in chunks if c["choices"][0]["delta"].get("refusal")]
    assert [r["delta"]["refusal"] for r in refusals] == ["I can't."]
    assert refusals[0]["logprobs"]["refusal"][0]["token"] == "I"


# -- reasoning and enforced tool_choice on the wire ----------------------------------------

CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def _post(client, body: dict, headers: dict | None = None):
    return client.post(CHAT, data=json.dumps(body), headers={**AUTH, **(headers or {})})


def test_reasoning_goes_as_reasoning_content_in_json_and_chunks(client):
    body = {"model": "openclaw/scripted", "messages": [{"role": "user", "content": "[[think]] hi"}]}
    document = _post(client, body).get_json()
    check_completion(document)  # OpenAI's message takes extra properties
    message = document["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think. Echo it." and message["content"] == "hi"
    chunks, _ = parse_sse(_post(client, {**body, "stream": True}).get_data())
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == [
        "Let me think. ",
        "Echo it.",
    ]
    reasoning_at = max(i for i, d in enumerate(deltas) if "reasoning_content" in d)
    assert reasoning_at < min(i for i, d in enumerate(deltas) if d.get("content"))


def test_a_reply_without_reasoning_has_no_reasoning_content(client):
    body = {"model": "openclaw/scripted", "messages": [{"role": "user", "content": "hi"}]}
    assert "reasoning_content" not in _post(client, body).get_json()["choices"][0]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_keyed_reply_replays_its_reasoning_as_first_sent(client, stream):
    body = {
        "model": "openclaw/scripted",
        "messages": [{"role": "user", "content": "[[think]] hi"}],
        "stream": stream,
    }
    headers = {"Idempotency-Key": f"think-{stream}", "x-openclaw-session-key": f"s-{stream}"}
    first, again = _post(client, body, headers), _post(client, body, headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    if not stream:
        assert again.get_json() == first.get_json()
        return
    reasoning = [
        "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
        for chunks in (parse_sse(first.get_data())[0], parse_sse(again.get_data())[0])
    ]
    assert reasoning == ["Let me think. Echo it."] * 2


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_an_unmet_tool_choice_is_502_in_json_and_stores_nothing(client, choice):
    # echo takes tools and tool_choice and never calls a tool: the gateway enforces it.
    headers = {"x-openclaw-session-key": "unmet"}
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": choice}
    response = _post(client, body, headers)
    error = check_error(response, status=502, code="tool_choice_not_satisfied")
    assert error["type"] == "api_error" and error["param"] == "tool_choice"
    # The session has no turn: the next request starts it with its own messages.
    later = _post(client, {"messages": [{"role": "user", "content": "again"}]}, headers)
    assert later.status_code == 200
    store = client.application.extensions["chatcompat"].store
    assert [m["content"] for m in store.load_history("agent:main:unmet", 10)] == ["again", "again"]


def test_an_unmet_tool_choice_ends_the_stream_with_an_error_frame_and_no_prose(client):
    body = {
        "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
        "tools": TOOLS,
        "tool_choice": "required",
    }
    response = _post(client, body)
    assert response.status_code == 200
    chunks, _ = parse_sse(response.get_data())
    assert chunks[-1]["error"]["code"] == "tool_choice_not_satisfied"
    assert all("content" not in c["choices"][0]["delta"] or not c["choices"][0]["delta"]["content"]
               for c in chunks[:-1])  # fmt: skip
    assert not any(c["choices"][0]["finish_reason"] for c in chunks[:-1])
