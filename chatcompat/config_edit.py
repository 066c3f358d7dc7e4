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
    objects leading to it, when missing, as the last member of the deepest object
    that exists); everything else is kept byte for byte, comments included.

    :raise EditError: the text is not a JSON5 object, a value on the way is not an
        object, or the result would not parse back to the expected document.
    """
    scanner = _Scanner(text)
    root = scanner.value()
    scanner.skip()
    if scanner.pos != len(text) or not text[root.start] == "{":
        raise EditError("the file is not one JSON5 object")
    node, depth = root, 0
    while depth < len(path) and path[depth] in node.members:
        node = node.members[path[depth]]
        depth += 1
        if depth < len(path) and text[node.start] != "{":
            raise EditError(f"{'.'.join(path[:depth])} is not an object")
    if depth == len(path) and text[node.start] != "[":
        raise EditError(f"{'.'.join(path)} is not an array")
    children = node.items if depth == len(path) else list(node.members.values())
    indent = _child_indent(text, node, children)

    def member(level: int, pad: str) -> str:
        """The text of ``path[level:]`` holding the entry, its first line at ``pad``."""
        if level == len(path):
            return _json5(entry)
        inner = member(level + 1, pad + "  ")
        if level == len(path) - 1:
            return f"{path[level]}: [\n{pad}  {inner},\n{pad}]"
        return f"{path[level]}: {{\n{pad}  {inner},\n{pad}}}"

    edits = _append(text, node, children, member(depth, indent), indent)
    edited = text
    for at, insert in reversed(edits):  # in document order: the last one first
        edited = edited[:at] + insert + edited[at:]
    expected = json5.loads(text)
    target = expected
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target.setdefault(path[-1], []).append(entry)
    if json5.loads(edited) != expected:  # a scanner bug: never write a changed document
        raise EditError("the edit would change more than the new entry")
    return edited


# What may follow the last element on its line for the new one to go on the next line:
# its comma, and a line comment.
_LINE_REST = re.compile(r"[ \t]*(,)?[ \t]*(//[^\n]*)?")


def _child_indent(text: str, node: _Node, children: list[_Node]) -> str:
    """The indentation of the container's elements (its own plus two spaces when it has
    none on a line of their own)."""
    for child in children:
        line_start = text.rfind("\n", 0, child.start) + 1
        if line_start > node.start and not text[line_start : child.start].strip():
            return text[line_start : child.start]
    return _indent_at(text, node.start) + "  "


def _append(
    text: str, node: _Node, children: list[_Node], new: str, indent: str
) -> list[tuple[int, str]]:
    """Insertions, in document order, that make ``new`` the container's last element:
    on a line of its own after the last element's line (a trailing comment stays with
    its element), or inline after it when the elements share lines with something
    else."""
    close = node.end - 1
    if not children:
        outer = _indent_at(text, node.start)
        return [(node.start + 1, f"\n{indent}{new},\n{outer}")]
    last = max(children, key=lambda child: child.end)
    newline = text.find("\n", last.end)
    rest = _LINE_REST.fullmatch(text[last.end : newline].rstrip("\r")) if newline >= 0 else None
    if rest is not None and newline < close:
        comma = [] if rest.group(1) else [(last.end, ",")]
        return [*comma, (newline, f"\n{indent}{new},")]
    return [(last.end, f", {new}")]


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
