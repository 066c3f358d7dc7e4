"""The neutral reply: what a run's events add up to, and the message stored as the turn."""

from __future__ import annotations

from chatcompat.agents.base import Finish
from chatcompat.agents.base import Logprobs
from chatcompat.agents.base import RefusalDelta
from chatcompat.agents.base import ReplyInfo
from chatcompat.agents.base import Started
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import ToolCallDelta
from chatcompat.agents.base import Usage
from chatcompat.protocol.reply import Reply


def reply_of(*events):
    reply = Reply()
    for event in events:
        reply.add(event)
    return reply


def test_text_finish_and_usage():
    usage = Usage(1, 2, 3)
    reply = reply_of(Started(), TextDelta("a "), TextDelta("b"), Finish("length", usage))
    assert (reply.text, reply.content, reply.finish_reason, reply.usage) == (
        "a b",
        "a b",
        "length",
        usage,
    )
    assert reply.refusal is None and reply.tool_calls == []
    assert reply.message() == {"role": "assistant", "content": "a b"}


def test_an_empty_reply_stops_with_empty_content():
    reply = reply_of(Finish())
    assert reply.content == "" and reply.finish_reason == "stop" and reply.usage is None


def test_tool_call_pieces_merge_by_index_in_order():
    reply = reply_of(
        ToolCallDelta(1, "c2", "g", "{"),
        ToolCallDelta(0, "c1", "f", '{"a"'),
        ToolCallDelta(0, None, None, ":1}"),
        ToolCallDelta(1, None, None, "}"),
        Finish("tool_calls"),
    )
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert reply.tool_calls == calls
    assert reply.content is None  # only tool calls: OpenAI's null content
    assert reply.message() == {"role": "assistant", "content": None, "tool_calls": calls}


def test_refusal_is_relayed_but_not_stored():
    reply = reply_of(RefusalDelta("no"), RefusalDelta(" way"), Finish())
    assert reply.refusal == "no way"
    assert reply.message() == {"role": "assistant", "content": ""}


def test_logprobs_merge_and_stay_none_until_some_arrive():
    assert reply_of(TextDelta("a"), Finish()).logprobs_content is None
    token = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    refused = {"token": "n", "logprob": -0.2, "bytes": [110], "top_logprobs": []}
    reply = reply_of(
        TextDelta("a", Logprobs(content=[token])),
        TextDelta("a", Logprobs(content=[token])),
        RefusalDelta("n", Logprobs(refusal=[refused])),
    )
    assert reply.logprobs_content == [token, token]
    assert reply.logprobs_refusal == [refused]


def test_reply_info_is_kept():
    reply = reply_of(ReplyInfo("default", "fp_1"), TextDelta("x"))
    assert (reply.service_tier, reply.system_fingerprint) == ("default", "fp_1")
