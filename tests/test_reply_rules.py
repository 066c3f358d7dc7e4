"""What of an agent's events reach the client: tool_choice enforced, reasoning relayed
or dropped (chatcompat.reply_rules), event by event."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat.agents.base import Finish
from chatcompat.agents.base import ReasoningDelta
from chatcompat.agents.base import RefusalDelta
from chatcompat.agents.base import ReplyInfo
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import ToolCallDelta
from chatcompat.reply_rules import ReplyRules
from chatcompat.reply_rules import demanded_tool

WEATHER = {"type": "function", "function": {"name": "get_weather"}}


def feed(rules: ReplyRules, events: list) -> list[list]:
    """What the rules pass on for each event, in order."""
    return [rules.take(event) for event in events]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, (False, None)),
        ("auto", (False, None)),
        ("none", (False, None)),
        ("required", (True, None)),
        (WEATHER, (True, "get_weather")),
    ],
)
def test_demanded_tool(choice, expected):
    assert demanded_tool(choice) == expected


@pytest.mark.parametrize(
    ("choice", "relay", "passive"),
    [(None, True, True), ("auto", True, True), ("none", True, False),
     ("required", True, False), (WEATHER, True, False), (None, False, False)],
)  # fmt: skip
def test_only_rules_without_anything_to_do_are_passive(choice, relay, passive):
    assert ReplyRules(choice, relay_reasoning=relay).passive is passive


@pytest.mark.parametrize("choice", [None, "auto"])
def test_without_a_demand_every_event_passes_as_it_comes(choice):
    events = [
        ReplyInfo("default", "fp"),
        ReasoningDelta("hm"),
        TextDelta("a"),
        RefusalDelta("no"),
        ToolCallDelta(0, "c1", "f", "{}"),
        Finish("tool_calls"),
    ]
    assert feed(ReplyRules(choice), events) == [[event] for event in events]


@pytest.mark.parametrize("choice", ["required", WEATHER])
def test_a_reply_without_the_demanded_call_fails_at_its_finish(choice):
    rules = ReplyRules(choice)
    assert feed(rules, [TextDelta("Sunny"), RefusalDelta("no")]) == [[], []]  # held back
    with pytest.raises(errors.ToolChoiceNotSatisfied) as caught:
        rules.take(Finish("stop"))
    error = caught.value
    assert (error.status, error.type, error.code) == (502, "api_error", "tool_choice_not_satisfied")
    assert error.param == "tool_choice"
    if choice == "required":
        assert "tool_choice=required was not satisfied" in error.message
    else:
        assert "'get_weather' tool call" in error.message


def test_required_held_prose_goes_out_before_the_first_call_then_streams():
    rules = ReplyRules("required")
    text, call = TextDelta("Let me look. "), ToolCallDelta(0, "c1", "get_time", "")
    assert feed(rules, [ReasoningDelta("think"), text]) == [[ReasoningDelta("think")], []]
    assert rules.take(call) == [text, call]
    more = TextDelta("Done.")
    assert rules.take(more) == [more]
    assert rules.take(Finish("tool_calls")) == [Finish("tool_calls")]


def test_a_named_choice_is_met_only_by_that_tool():
    rules = ReplyRules(WEATHER)
    other = ToolCallDelta(0, "c1", "get_time", "{}")
    text = TextDelta("x")
    assert feed(rules, [text, other]) == [[], [other]]  # calls stream; prose stays held
    weather = ToolCallDelta(1, "c2", "get_weather", "")
    assert rules.take(weather) == [text, weather]
    assert rules.take(Finish("tool_calls")) == [Finish("tool_calls")]


def test_a_named_choice_checks_the_complete_name_at_the_finish():
    # A name streamed in pieces may pass through the demanded one ("get_weather" on
    # its way to "get_weather_hourly"): the Finish looks at the whole name.
    rules = ReplyRules(WEATHER)
    rules.take(ToolCallDelta(0, "c1", "get_weather", ""))
    rules.take(ToolCallDelta(0, None, "_hourly", "{}"))
    with pytest.raises(errors.ToolChoiceNotSatisfied):
        rules.take(Finish("tool_calls"))


def test_a_name_in_pieces_meets_the_demand_once_complete():
    rules = ReplyRules(WEATHER)
    first, rest = ToolCallDelta(0, "c1", "get_", ""), ToolCallDelta(0, None, "weather", "{}")
    assert rules.take(TextDelta("a")) == []
    assert rules.take(first) == [first]
    assert rules.take(rest) == [TextDelta("a"), rest]
    assert rules.take(Finish("tool_calls")) == [Finish("tool_calls")]


def test_tool_choice_none_relays_no_call_and_finishes_with_stop():
    rules = ReplyRules("none")
    text = TextDelta("Sunny.")
    events = [text, ToolCallDelta(0, "c1", "get_weather", "{}"), ToolCallDelta(0, None, None, "}")]
    assert feed(rules, events) == [[text], [], []]
    assert rules.take(Finish("tool_calls", None)) == [Finish("stop", None)]
    assert ReplyRules("none").take(Finish("length")) == [Finish("length")]


def test_reasoning_is_dropped_when_the_agent_says_so():
    rules = ReplyRules(None, relay_reasoning=False)
    assert rules.take(ReasoningDelta("secret thoughts")) == []
    assert rules.take(TextDelta("a")) == [TextDelta("a")]
