"""A cheaper ``http.client.HTTPResponse``: the same response head, parsed without the
``email`` package.

``http.client`` hands every response's header block to ``email.parser``, a general
MIME parser: about 30 µs for an upstream's ten headers, on every run. Header blocks
as servers send them (``Name: value`` lines, nothing folded or odd) are split here
into the same :class:`http.client.HTTPMessage`, with the same ``set_raw`` calls the
email parser makes, so names, values and their order are identical. Anything else
(a folded line, a line without a name, a stray CR) goes to the email parser as
before, so what it accepts, refuses or drops stays exactly as it was. The status line
and the limits on header lines (length, count) are still ``http.client``'s own.
"""

from __future__ import annotations

import email.parser
import http.client
import re

# One header line the email parser reads as "name: value" and nothing else: a name of
# the characters its header pattern allows (no space, so never a "From " line), a
# colon, a value without CR or LF, and the line's end. The value's leading blanks are
# stripped after the match: a "[ \t]*" before "[^\r\n]*" would let both claim the same
# blanks, and a long blank line that fails to match would then backtrack in O(n^2)
# (an upstream could hold a worker for minutes with one 64 KiB header line).
_PLAIN_LINE = re.compile(r"([\041-\071\073-\176]+):([^\r\n]*)\r?\n\Z")


def parse_head(lines: list[bytes]) -> http.client.HTTPMessage:
    """The headers of ``lines`` (as ``http.client._read_headers`` read them, the
    blank line last), as ``http.client.parse_headers`` would have parsed them.

    :param lines: the header lines with their line ends, the last one blank or empty.
    :return: a new message; ``http.client`` reads ``get``, ``get_all`` and ``items``.
    """
    message = http.client.HTTPMessage()
    for raw in lines[:-1]:
        match = _PLAIN_LINE.match(raw.decode("iso-8859-1"))
        if match is None:
            return _email_parse(lines)
        message.set_raw(match[1], match[2].lstrip(" \t"))
    return message


def _email_parse(lines: list[bytes]) -> http.client.HTTPMessage:
    """What ``http.client.parse_headers`` does with lines already read."""
    text = b"".join(lines).decode("iso-8859-1")
    parser = email.parser.Parser(_class=http.client.HTTPMessage)
    return parser.parsestr(text)


class HTTPResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` with :func:`parse_head` for its headers."""

    def begin(self) -> None:
        # CPython's HTTPResponse.begin (3.10 to 3.13, unchanged there), with the
        # header block read by _read_headers and parsed by parse_head.
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_head(http.client._read_headers(self.fp))
        encoding = self.headers.get("transfer-encoding")
        if encoding and encoding.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
