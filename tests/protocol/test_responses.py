"""The Responses API on the wire: every object and event passes OpenAI's published
schemas; the stream and the Response agree item by item; a run that fails after the
first byte ends with ``response.failed`` and stores nothing."""

from __future__ import annotations

import json

import pytest

from chatcompat import errors
from chatcompat import responses_request
from chatcompat.agents.base import Finish
from chatcompat.agents.base import Logprobs
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import ToolCallDelta
from chatcompat.agents.base import Usage
from chatcompat.protocol import responses as protocol
from chatcompat.protocol.reply import Reply
from chatcompat.sessions.base import StoreUnreachable
from tests.run_support import SCRIPTED_AGENT
from tests.run_support import KeepsResponses
from tests.run_support import LostReplies
from tests.run_support import make_run
from tests.scripted_agent import THOUGHTS
from tests.wire import accumulate
from tests.wire import check
from tests.wire import check_response
from tests.wire import check_response_event
from tests.wire import parse_response_sse

pytestmark = pytest.mark.usefixtures("quick_turn_write_retries")

KEY = "agent:scripted:k"


@pytest.fixture
def store(store):
    return KeepsResponses(store)


def started(settings, store, body, **run_args):
    request = responses_request.parse(body if isinstance(body, dict) else {"input": body})
    run = make_run(settings, store, SCRIPTED_AGENT, store_turn=request.store, **run_args)
    run.start(request.conversation, request.params)
    return run, request


def streamed(settings, store, body, **run_args):
    run, request = started(settings, store, body, **run_args)
    events, frames = parse_response_sse(b"".join(protocol.stream(run, request)))
    return events, frames, request


def completed(settings, store, body):
    run, request = started(settings, store, body)
    document = protocol.complete(run, request)
    check_response(document)
    return document


def final(events):
    """The last event's Response, after checking the stream builds the same output."""
    last = events[-1]["response"]
    assert accumulate(events) == last["output"]
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0]["response"]["id"] == last["id"]
    assert "usage" not in events[0]["response"] and "user" not in events[0]["response"]
    return last


# -- objects ---------------------------------------------------------------------------


def test_a_text_reply_is_one_message_with_an_output_text_part(settings, store):
    document = completed(settings, store, {"input": "hello there", "temperature": 0.5})
    assert document["id"].startswith("resp_") and len(document["id"]) == 5 + 32
    assert document["status"] == "completed" and document["object"] == "response"
    [message] = document["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["status"] == "completed"
    assert message["content"] == [
        {"type": "output_text", "text": "hello there", "annotations": [], "logprobs": []}
    ]
    assert document["usage"] == {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 3,
    }
    assert document["temperature"] == 0.5 and document["top_p"] is None
    assert document["tools"] == [] and document["tool_choice"] == "auto"
    assert "user" not in document and document["incomplete_details"] is None
    stored = store.load_history(KEY, 10)
    assert stored == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hello there"},
    ]
    record = store.get_response(document["id"])
    assert record.document == document and record.owner == "operator"
    assert record.input_items == [
        {
            "id": record.input_items[0]["id"],
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hello there"}],
            "status": "completed",
        }
    ]
    assert record.input_items[0]["id"].startswith("msg_")


def test_the_echo_repeats_the_request_as_openai_does(settings, store):
    body = {
        "input": "[[tool]]",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "get_weather", "description": "d"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "metadata": {"k": "v"},
        "user": "alice",
        "max_output_tokens": 9,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        "top_logprobs": 2,
        "store": False,
    }
    document = completed(settings, store, body)
    assert document["instructions"] == "Be brief."
    assert document["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "d",
            "parameters": None,
            "strict": None,
        }
    ]
    assert document["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert document["metadata"] == {"k": "v"} and document["user"] == "alice"
    assert document["max_output_tokens"] == 9 and document["store"] is False
    assert document["text"]["format"]["name"] == "out" and document["top_logprobs"] == 2
    assert document["reasoning"] == {"effort": "low", "summary": None}


@pytest.mark.parametrize("streaming", [False, True])
def test_one_tool_call_follows_the_text_that_came_first(settings, store, streaming):
    body = {"input": "[[tool]]", "tools": [{"type": "function", "name": "get_weather"}]}
    if streaming:
        events, _, _ = streamed(settings, store, body)
        document = final(events)
        kinds = [e["type"] for e in events]
        assert kinds.count("response.function_call_arguments.delta") == 2
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert done["arguments"] == '{"city":"Oslo"}' and done["name"] == "get_weather"
    else:
        document = completed(settings, store, body)
    message, call = document["output"]
    assert message["content"][0]["text"] == "Checking."
    assert call == {
        "id": call["id"],
        "type": "function_call",
        "call_id": "call_w",
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
        "status": "completed",
    }
    assert call["id"].startswith("fc_") and document["status"] == "completed"
    assert store.load_history(KEY, 10)[-1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }


@pytest.mark.parametrize("streaming", [False, True])
def test_two_tool_calls_are_two_function_call_items(settings, store, streaming):
    if streaming:
        events, _, _ = streamed(settings, store, "[[tools]]")
        document = final(events)
    else:
        document = completed(settings, store, "[[tools]]")
    calls = document["output"]
    assert [(c["type"], c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        ("function_call", "call_1", "get_weather", '{"city":"Paris"}'),
        ("function_call", "call_2", "get_time", "{}"),
    ]
    assert len({c["id"] for c in calls}) == 2


@pytest.mark.parametrize("streaming", [False, True])
def test_reasoning_is_an_item_of_its_own_and_never_stored(settings, store, streaming):
    if streaming:
        events, _, _ = streamed(settings, store, "[[think]] the answer")
        document = final(events)
        deltas = [
            e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"
        ]
        assert deltas == list(THOUGHTS)
    else:
        document = completed(settings, store, "[[think]] the answer")
    reasoning, message = document["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "".join(THOUGHTS)}]
    assert message["content"][0]["text"] == "the answer"
    assert store.load_history(KEY, 10)[-1] == {"role": "assistant", "content": "the answer"}


@pytest.mark.parametrize("streaming", [False, True])
def test_a_refusal_is_a_refusal_part(settings, store, streaming):
    if streaming:
        events, _, _ = streamed(settings, store, "[[refuse]]")
        document = final(events)
        assert "response.refusal.done" in [e["type"] for e in events]
    else:
        document = completed(settings, store, "[[refuse]]")
    [message] = document["output"]
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert store.load_history(KEY, 10)[-1] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("streaming", [False, True])
def test_a_reply_cut_by_the_token_limit_is_incomplete_and_stored(settings, store, streaming):
    if streaming:
        events, _, _ = streamed(settings, store, "[[length]] one two")
        assert events[-1]["type"] == "response.incomplete"
        document = final(events)
    else:
        document = completed(settings, store, "[[length]] one two")
    assert document["status"] == "incomplete"
    assert document["incomplete_details"] == {"reason": "max_output_tokens"}
    assert document["output"][0]["status"] == "incomplete"
    assert store.get_response(document["id"]) is not None


def test_text_logprobs_are_converted_to_output_text_logprobs():
    entry = {
        "token": "hi",
        "logprob": -0.5,
        "bytes": [104, 105],
        "top_logprobs": [{"token": "hi", "logprob": -0.5, "bytes": None}],
    }
    output = protocol.Output(protocol.EventEncoder(), [], "resp_" + "0" * 32)
    output.add(TextDelta("hi", Logprobs(content=[entry])))
    reply = Reply()
    reply.add(Finish("stop", Usage(1, 1, 2)))
    output.finish(reply)
    frames = b"".join(output.frames)
    part = output.items[0]["content"][0]
    assert part["logprobs"] == [
        {
            "token": "hi",
            "logprob": -0.5,
            "bytes": [104, 105],
            "top_logprobs": [{"token": "hi", "logprob": -0.5, "bytes": []}],
        }
    ]
    events = [json.loads(f.split(b"data: ", 1)[1]) for f in frames.split(b"\n\n") if f]
    for event in events:
        check_response_event(event)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == part["logprobs"]


def test_a_tool_call_without_an_id_gets_one_and_the_stored_turn_uses_it():
    output = protocol.Output(None, None, "resp_" + "0" * 32)
    reply = Reply()
    for event in (ToolCallDelta(0, name="f", arguments="{}"), Finish("tool_calls")):
        reply.add(event)
        output.add(event)
    output.finish(reply)
    call_id = output.items[0]["call_id"]
    assert call_id.startswith("call_") and reply.message()["tool_calls"][0]["id"] == call_id


def test_the_tier_that_served_the_reply_is_the_responses_service_tier(settings, store):
    from chatcompat.agents.base import ReplyInfo

    run, request = started(settings, store, {"input": "x", "service_tier": "auto"})
    assert request.echo["service_tier"] == "auto"
    reply = Reply()
    reply.add(ReplyInfo(service_tier="default"))
    output = protocol.Output(None, None, "resp_" + "0" * 32)
    output.finish(reply)
    document = protocol._document("resp_1", run, request, output, "completed", None, reply)
    check_response(document)
    assert document["service_tier"] == "default"
    run.close()


def test_an_empty_reply_is_an_empty_message():
    output = protocol.Output(None, None, "resp_" + "0" * 32)
    reply = Reply()
    reply.add(Finish("stop"))
    output.finish(reply)
    assert output.items[0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]


# -- streams ----------------------------------------------------------------------------


def test_a_text_stream_has_openais_events_in_order(settings, store):
    events, frames, _ = streamed(settings, store, "a b c")
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    document = final(events)
    assert document["output"][0]["content"][0]["text"] == "a b c"
    assert store.get_response(document["id"]).document == document
    assert not any("[DONE]" in frame for frame in frames)


def test_a_stream_sends_keepalives_while_the_agent_is_silent(settings, store):
    import dataclasses

    quick = dataclasses.replace(settings, sse_keepalive_seconds=0.05)
    events, frames, _ = streamed(quick, store, "[[silent:0.3]] hi")
    assert ": keepalive" in frames
    assert final(events)["output"][0]["content"][0]["text"] == "hi"


def test_a_failure_after_the_first_byte_is_response_failed(settings, store):
    events, _, _ = streamed(settings, store, "[[fail-after:2]] a b c d")
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "server_error",
        "message": "the agent failed mid-stream",
    }
    assert failed["response"]["output"][0]["content"][0]["text"] == "a b"
    assert store.load_history(KEY, 10) is None


def test_an_upstream_429_fails_as_rate_limit_exceeded():
    error = errors.UpstreamRejected(429, "slow down", "rate_limit_error", "rate_limit_exceeded")
    assert protocol.failure(error) == {"code": "rate_limit_exceeded", "message": "slow down"}
    assert protocol.failure(errors.GatewayTimeout("late"))["code"] == "server_error"


def test_a_store_failure_at_the_end_is_response_failed_not_completed(settings, store, monkeypatch):
    run, request = started(settings, store, "a b")

    def broken(*args, **kwargs):
        raise StoreUnreachable("gone")

    monkeypatch.setattr(store, "append_turn", broken)
    events, _ = parse_response_sse(b"".join(protocol.stream(run, request)))
    assert events[-1]["type"] == "response.failed"
    assert "response.completed" not in [e["type"] for e in events]
    assert events[-1]["response"]["error"]["code"] == "server_error"


def test_a_stream_whose_turn_write_stays_unknown_fails(settings, store):
    request = responses_request.parse({"input": "a b"})
    run = make_run(settings, LostReplies(store, failures=99), SCRIPTED_AGENT)
    run.start(request.conversation, request.params)
    events, _ = parse_response_sse(b"".join(protocol.stream(run, request)))
    assert "may not have been stored" in events[-1]["response"]["error"]["message"]


def test_store_false_stores_nothing_streamed_or_not(settings, store):
    events, _, _ = streamed(settings, store, {"input": "a b", "store": False})
    assert final(events)["store"] is False
    document = completed(settings, store, {"input": "c", "store": False})
    assert store.load_history(KEY, 10) is None
    assert store.get_response(document["id"]) is None
    assert store.get_response(events[-1]["response"]["id"]) is None


def test_stream_closed_by_the_server_cancels_and_stores_nothing(settings, store):
    run, request = started(settings, store, "[[slow:100]] a b c d e f")
    body = protocol.stream(run, request)
    assert next(body).startswith(b"event: response.created\n")
    body.close()
    assert run._cancel.is_set
    assert store.load_history(KEY, 10) is None


def test_a_given_id_names_the_response(settings, store):
    run, request = started(settings, store, "hi")
    assert protocol.complete(run, request, id="resp_" + "0" * 32)["id"] == "resp_" + "0" * 32


# -- replay and the other routes --------------------------------------------------------


@pytest.mark.parametrize("directive", ["a b", "[[tool]]", "[[think]] x", "[[refuse]]"])
def test_a_replayed_stream_rebuilds_the_stored_response(settings, store, directive):
    document = completed(settings, store, {"input": directive, "store": False})
    response = protocol.replay_response(document, stream=True)
    assert response.headers["Idempotent-Replayed"] == "true"
    events, _ = parse_response_sse(response.get_data())
    assert events[-1]["response"] == document
    assert accumulate(events) == document["output"]
    plain = protocol.replay_response(document, stream=False)
    assert json.loads(plain.get_data()) == document


def test_the_deletion_object():
    assert protocol.deleted("resp_1") == {"id": "resp_1", "object": "response", "deleted": True}


def test_input_items_are_listed_in_openais_shape():
    request = responses_request.parse(
        {
            "input": [
                {"role": "user", "content": "one"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                {"role": "assistant", "content": "it is 42"},
                {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
            ]
        }
    )
    items = request.input_items
    newest_first = protocol.input_item_list(items)
    check("ResponseItemList", newest_first)
    assert [i["id"] for i in newest_first["data"]] == [i["id"] for i in reversed(items)]
    assert newest_first["first_id"] == items[-1]["id"] and not newest_first["has_more"]
    page = protocol.input_item_list(items, limit=2, order="asc", after=items[0]["id"])
    check("ResponseItemList", page)
    assert [i["id"] for i in page["data"]] == [items[1]["id"], items[2]["id"]]
    assert page["has_more"] is True
    empty = protocol.input_item_list(items, order="asc", after=items[-1]["id"])
    check("ResponseItemList", empty)
    assert empty["data"] == [] and empty["first_id"] == "" and not empty["has_more"]
    with pytest.raises(errors.InvalidRequest) as caught:
        protocol.input_item_list(items, after="msg_nope")
    assert caught.value.param == "after"


@pytest.mark.parametrize(
    "args, expected",
    [({}, (20, "desc", None)), ({"limit": "100", "order": "asc", "after": "m"}, (100, "asc", "m"))],
)
def test_list_params_defaults_and_values(args, expected):
    assert protocol.list_params(args) == expected


@pytest.mark.parametrize(
    "args, param",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
    ],
)
def test_list_params_refused(args, param):
    with pytest.raises(errors.InvalidRequest) as caught:
        protocol.list_params(args)
    assert caught.value.param == param


# -- the official SDK's accumulator ------------------------------------------------------


@pytest.mark.parametrize(
    "directive", ["a b c", "[[tool]]", "[[tools]]", "[[think]] x", "[[refuse]]"]
)
def test_openai_pythons_stream_accumulator_builds_the_same_response(settings, store, directive):
    """``client.responses.stream()`` of the official SDK, fed our bytes: it checks
    indexes and part types as it accumulates, and ends on the completing event (no
    ``[DONE]``)."""
    import httpx2 as httpx
    import openai

    body = {"input": directive, "tools": [{"type": "function", "name": "get_weather"}]}
    run, request = started(settings, store, body)
    raw = b"".join(protocol.stream(run, request))

    def handler(http_request):
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    client = openai.OpenAI(
        api_key="k",
        base_url="http://gateway/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with client.responses.stream(model="m", input=directive) as sdk_stream:
        kinds = [event.type for event in sdk_stream]
        sdk_final = sdk_stream.get_final_response()
    events, _ = parse_response_sse(raw)
    assert kinds == [e["type"] for e in events]
    output = sdk_final.model_dump(mode="json", exclude_unset=True)["output"]
    for item in output:  # what the SDK adds of its own (structured output parsing)
        item.pop("parsed_arguments", None)
        for part in item.get("content", ()):
            part.pop("parsed", None)
    assert output == events[-1]["response"]["output"]
    if directive == "a b c":
        assert sdk_final.output_text == "a b c"


def test_the_real_store_keeps_the_response_as_returned(settings, store):
    real = store.store  # under the wrapper: the session store itself
    request = responses_request.parse({"input": "a b"})
    run = make_run(settings, real, SCRIPTED_AGENT)
    run.start(request.conversation, request.params)
    document = protocol.complete(run, request)
    record = real.get_response(document["id"])
    assert record.document == document and record.input_items == request.input_items
    assert record.session_key == KEY and record.position == 2 and record.latest


def test_an_output_items_id_names_its_response_and_place():
    response_id = protocol.response_id()
    item_id = protocol.output_item_id("fc", response_id, 3)
    assert item_id.startswith("fc_") and protocol.response_of_item(item_id) == (response_id, 3)
    for foreign in ("msg_123", "fc_" + "0" * 32, "call_" + "0" * 32 + "_1", response_id):
        assert protocol.response_of_item(foreign) is None
