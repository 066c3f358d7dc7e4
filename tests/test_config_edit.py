"""Editing a JSON5 config in place: comments and layout survive, the result parses to
the old document plus the new entry."""

from __future__ import annotations

import json5
import pytest

from chatcompat.config_edit import EditError
from chatcompat.config_edit import append_to_list

PATH = ("gateway", "auth", "keys")
ENTRY = {"id": "app1", "tokenSha256": "ab" * 32, "agents": ["main"]}


@pytest.mark.parametrize(
    "text",
    [
        '// top\n{\n  gateway: {\n    auth: {\n      mode: "token", // m\n    },\n  },\n}\n',
        '{ gateway: { auth: { keys: [ {id: "a", token: "t"} /* c */ ] } } }',
        '{ gateway: { auth: { keys: [ {id: "a", token: "t"}, ], }, }, }',
        "{ gateway: { auth: { keys: [] } } }",
        "{ agents: {list: []} } // no gateway",
        "{}",
        '{\n  "gateway": {\n    "auth": {\n      "token": "x"\n    }\n  }\n}\n',
        '{\n  "gateway": {\n    "auth": {\n      "keys": [\n'
        '        {"id": "a", "token": "t"}\n      ]\n    }\n  }\n}',
        "{\n  agents: {list: []}, // a\n}",
        "{ gateway: { port: 1, /* x */ }, }",
        '{ "gateway": { "auth": { "token": "a // not a comment", "keys": [] } } }',
        "{ gateway: { auth: { token: 'it\\'s }' } } }",
    ],
)
def test_the_entry_is_added_and_nothing_else_changes(text):
    edited = append_to_list(text, PATH, ENTRY)
    expected = json5.loads(text)
    auth = expected.setdefault("gateway", {}).setdefault("auth", {})
    auth.setdefault("keys", []).append(ENTRY)
    assert json5.loads(edited) == expected
    for comment in ("// top", "// m", "/* c */", "/* x */", "// no gateway"):
        assert (comment in text) == (comment in edited)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not one JSON5 object"),
        ("{ gateway: 5 }", "gateway is not an object"),
        ("{ gateway: { auth: { keys: {} } } }", "gateway.auth.keys is not an array"),
        ("{ a: 'open", "unclosed string"),
        ("{ /* open", "unclosed comment"),
    ],
)
def test_what_cannot_be_edited_safely_is_refused(text, message):
    with pytest.raises(EditError, match=message):
        append_to_list(text, PATH, ENTRY)


def test_a_trailing_comment_stays_on_its_line():
    text = '{\n  gateway: {\n    auth: {\n      token: "x" // the token\n    },\n  },\n}\n'
    edited = append_to_list(text, PATH, ENTRY)
    assert '      token: "x", // the token\n      keys: [\n' in edited
    text = (
        '{\n  gateway: { auth: {\n    keys: [\n      {id: "a", token: "t"}, // first\n'
        "    ],\n  } },\n}"
    )
    edited = append_to_list(text, PATH, ENTRY)
    assert '{id: "a", token: "t"}, // first\n      { id: "app1",' in edited
