"""OpenAI shapes: every builder's output passes OpenAI's published schemas."""

from __future__ import annotations

import json

from chatcompat import protocol
from tests.wire import check
from tests.wire import check_chunk
from tests.wire import check_completion


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


def test_models():
    check("ListModelsResponse", protocol.model_list(["openclaw", "openclaw/main"]))
    check("Model", protocol.model_entry("openclaw"))
