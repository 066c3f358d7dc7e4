"""What the agent receives (SPEC 9): system text, new turn, history choice, flattening."""

from __future__ import annotations

import pytest

from chatcompat.history import MissingUserMessage
from chatcompat.history import choose_history
from chatcompat.history import drop_images
from chatcompat.history import flatten_prompt
from chatcompat.history import join_system_prompts
from chatcompat.history import message_text
from chatcompat.history import split_request


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def test_message_text_joins_text_parts_with_newlines():
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "hello"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "input_text", "text": "world"},
        ],
    }
    assert message_text(message) == "hello\nworld"
    assert message_text({"role": "assistant", "content": None}) == ""


def test_split_collects_system_texts_anywhere_and_the_new_turn():
    messages = [
        {"role": "system", "content": "S1"},
        u("q1"),
        a("a1"),
        {"role": "developer", "content": "D"},
        u("q2"),
        u("q3"),
    ]
    system, earlier, new_turn = split_request(messages)
    assert system == "S1\n\nD"
    assert earlier == [u("q1"), a("a1")]
    assert new_turn == [u("q2"), u("q3")]


def test_reasoning_a_client_sends_back_is_left_out():
    thought = {**a("a1"), "reasoning_content": "hm", "reasoning": "hm"}
    messages = [u("q1"), thought, u("q2")]
    _, earlier, _ = split_request(messages)
    assert earlier == [u("q1"), a("a1")]
    assert messages[1]["reasoning_content"] == "hm"  # the request's own copy is untouched


def test_a_tool_result_is_a_turn_to_answer():
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    _, earlier, new_turn = split_request(
        [u("q"), call, {"role": "tool", "tool_call_id": "c1", "content": ""}]
    )
    assert earlier == [u("q"), call]
    assert new_turn[0]["role"] == "tool"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "s"}],
        [u("q"), a("a")],
        [u(" \n ")],
        [u([{"type": "text", "text": " "}])],
    ],
)
def test_nothing_to_answer(messages):
    with pytest.raises(MissingUserMessage):
        split_request(messages)


def test_image_only_turn_is_answerable():
    split_request([u([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}])])


def test_choose_history_prefers_the_store_and_applies_the_limit():
    stored = [u("s1"), a("s2"), u("s3"), a("s4")]
    assert choose_history(stored, [u("client copy")], 3) == stored[-3:]
    assert choose_history([], [u("c")], 3) == []  # a stored empty transcript still wins
    assert choose_history(None, [u("c1"), a("c2")], 10) == [u("c1"), a("c2")]
    assert choose_history(stored, [], 0) == []


def test_join_system_prompts():
    assert join_system_prompts("agent", "request") == "agent\n\nrequest"
    assert join_system_prompts(None, "") is None


def test_flatten_lone_message_is_sent_as_is():
    assert flatten_prompt([u("Hello")]) == "Hello"


def test_flatten_with_history_uses_openclaw_markers():
    call = {
        "role": "assistant",
        "content": "checking",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    prompt = flatten_prompt(
        [
            u("hi"),
            a("hello"),
            u("weather?"),
            call,
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        ]
    )
    assert prompt == (
        "[Chat messages since your last reply - for context]\n"
        "User: hi\n"
        "Assistant: hello\n"
        "User: weather?\n"
        'Assistant: checking\ntool_call id=c1 name=weather arguments={"city":"Paris"}\n'
        "\n"
        "[Current message - respond to this]\n"
        "Tool:c1: Sunny"
    )


def test_flatten_lone_tool_result_keeps_its_label():
    assert flatten_prompt([{"role": "tool", "tool_call_id": "c9", "content": "42"}]) == (
        "[Chat messages since your last reply - for context]\n\n"
        "[Current message - respond to this]\nTool:c9: 42"
    )


def test_drop_images_logs_and_keeps_text(caplog):
    message = u([{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "x"}}])
    result = drop_images([message], agent_id="main")
    assert result == [u([{"type": "text", "text": "see"}])]
    assert message["content"][1]["type"] == "image_url"  # the input is not mutated
    assert "dropped 1 image part" in caplog.text


def test_history_window_never_opens_with_orphan_tool_results():
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    stored = [
        u("q1"),
        call,
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "function", "name": "f", "content": "r2"},
        a("done"),
        u("q2"),
        a("a2"),
    ]
    assert choose_history(stored, [], 5) == [a("done"), u("q2"), a("a2")]
    assert choose_history(stored, [], 6)[0] == call
    assert choose_history(stored[2:4], [], 5) == []
