"""Edit a JSON5 configuration file in place without losing its comments or layout.

``chatcompat keys add`` inserts one object into ``gateway.auth.keys``. No JSON5
library at hand keeps comments through a load and dump, so the text itself is edited:
a small scanner finds where each object and array of the document starts and ends
(skipping strings and comments), and the new text goes in at the one right spot. The
result is parsed again and must equal the old document plus the new entry, or
nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import typing as t

import json5

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_SCALAR_END = re.compile(r"[\s,\]\}/]")


class EditError(Exception):
    """The file cannot be edited safely (the message says why)."""


@dataclasses.dataclass
class _Node:
    """A value's span: ``text[start:end]``; for objects and arrays, ``start`` is the
    opening bracket and ``end - 1`` the closing one."""

    start: int
    end: int
    members: dict[str, _Node] = dataclasses.field(default_factory=dict)
    items: list[_Node] = dataclasses.field(default_factory=list)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> t.NoReturn:
        line = self.text.count("\n", 0, self.pos) + 1
        raise EditError(f"line {line}: {what}")

    def skip(self) -> None:
        """Past whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace() or text[self.pos] == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline + 1
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    self.fail("unclosed comment")
                self.pos = close + 2
            else:
                return

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            self.pos += 1
            if char == quote:
                return t.cast(str, json5.loads(self.text[start : self.pos]))
        self.fail("unclosed string")

    def value(self) -> _Node:
        self.skip()
        if self.pos >= len(self.text):
            self.fail("a value is missing")
        char = self.text[self.pos]
        start = self.pos
        if char == "{":
            return self._object(start)
        if char == "[":
            return self._array(start)
        if char in "\"'":
            self.string()
            return _Node(start, self.pos)
        end = _SCALAR_END.search(self.text, self.pos)
        self.pos = len(self.text) if end is None else end.start()
        if self.pos == start:
            self.fail(f"unexpected {char!r}")
        return _Node(start, self.pos)

    def _object(self, start: int) -> _Node:
        node = _Node(start, start)
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                node.end = self.pos
                return node
            if self.text[self.pos : self.pos + 1] in ("'", '"'):
                key = self.string()
            else:
                match = _IDENTIFIER.match(self.text, self.pos)
                if match is None:
                    self.fail("a key is expected")
                key, self.pos = match[0], match.end()
            self.skip()
            if not self.text.startswith(":", self.pos):
                self.fail("':' is expected")
            self.pos += 1
            node.members[key] = self.value()
            self._separator("}")

    def _array(self, start: int) -> _Node:
        node = _Node(start, start)
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("]", self.pos):
                self.pos += 1
                node.end = self.pos
                return node
            node.items.append(self.value())
            self._separator("]")

    def _separator(self, close: str) -> None:
        self.skip()
        if self.text.startswith(",", self.pos):
            self.pos += 1
        elif not self.text.startswith(close, self.pos):
            self.fail(f"',' or '{close}' is expected")


def _indent_at(text: str, position: int) -> str:
    line_start = text.rfind("\n", 0, position) + 1
    line = text[line_start:position]
    return line[: len(line) - len(line.lstrip())]


def append_to_list(text: str, path: tuple[str, ...], entry: dict[str, t.Any]) -> str:
    """``text`` with ``entry`` appended to the array at ``path`` (created, with the
    objects leading to it, when missing); everything else is kept byte for byte.

    :raise EditError: the text is not a JSON5 object, a value on the way is not an
        object, or the result would not parse back to the expected document.
    """
    scanner = _Scanner(text)
    root = scanner.value()
    scanner.skip()
    if scanner.pos != len(text) or not text[root.start] == "{":
        raise EditError("the file is not one JSON5 object")
    entry_text = _json5(entry)
    node, depth = root, 0
    while depth < len(path) and path[depth] in node.members:
        node = node.members[path[depth]]
        depth += 1
        if depth < len(path) and text[node.start] != "{":
            raise EditError(f"{'.'.join(path[:depth])} is not an object")
    indent = _indent_at(text, node.start)
    if depth == len(path):
        if text[node.start] != "[":
            raise EditError(f"{'.'.join(path)} is not an array")
        if node.items:
            last = node.items[-1]
            item_indent = _indent_at(text, node.items[0].start) or indent + "  "
            insert, at = f",\n{item_indent}{entry_text}", last.end
        else:
            insert, at = f"\n{indent}  {entry_text},\n{indent}", node.start + 1
    else:
        # Build the missing levels, innermost first, then open them under ``node``.
        inner = f"[\n{indent}{'  ' * (len(path) - depth + 1)}{entry_text},\n"
        inner += f"{indent}{'  ' * (len(path) - depth)}]"
        for level in range(len(path) - 1, depth, -1):
            pad = indent + "  " * (level - depth + 1)
            inner = f"{{\n{pad}{path[level]}: {inner},\n{indent}{'  ' * (level - depth)}}}"
        insert, at = f"\n{indent}  {path[depth]}: {inner},", node.start + 1
    edited = text[:at] + insert + text[at:]
    expected = json5.loads(text)
    target = expected
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target.setdefault(path[-1], []).append(entry)
    if json5.loads(edited) != expected:  # a scanner bug: never write a changed document
        raise EditError("the edit would change more than the new entry")
    return edited


def _json5(value: t.Any) -> str:
    """A one-line JSON5 object with unquoted keys."""
    if isinstance(value, dict):
        parts = [f"{key}: {_json5(item)}" for key, item in value.items()]
        return "{ " + ", ".join(parts) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_json5(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, keeping the file's mode."""
    mode = os.stat(path).st_mode & 0o777
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".chatcompat-", suffix=".json5")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
