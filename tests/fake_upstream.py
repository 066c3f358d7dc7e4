"""A fake OpenAI-compatible upstream: real HTTP/1.1 on loopback, in a background thread.

Serves ``POST /v1/chat/completions`` (SSE when ``stream`` is true, else JSON) with a
deterministic reply: ``You said: <last user text>``, or ``Tool result: <content>``
when the last message is a tool result, one chunk per word. Usage counts words:
``prompt_tokens`` over every message sent, ``completion_tokens`` over the reply.

Knobs, for the whole server (``FakeUpstream(delay=0.05)`` or ``fake.knobs[...] = ...``)
or for one request (a directive in its last user text, e.g. ``[[status:401]]``)::

    delay:<s>        pause before each word (watching for the client going away); a
                     JSON answer (stream false) comes after all the pauses, and the
                     failure knobs below (gated, cut, malformed, error-frame, flood)
                     fail it in their JSON form
    gated            send each word only once the test releases :attr:`FakeUpstream.gate`
                     (a word that waits more than 5 s ends the request without it)
    status:<code>    answer that status with an OpenAI error body
    plain:<code>     answer that status with a text/plain body
    stall:<s>        wait before sending the status line (header timeouts)
    cut:<n>          send n words, then drop the connection (no end of body)
    malformed:<n>    send n words, then a data line that is not JSON
    error-frame:<n>  send n words, then an OpenAI error event and [DONE]
    quote-key[:<n>]  error messages (status, error-frame) quote the request's bearer
                     key, or its first n characters, as some upstreams do
    tools            answer with two tool calls (finish_reason tool_calls)
    call:<name>:<json>  answer with one call of the tool ``name`` with those arguments
                     (finish_reason tool_calls); the tool result that comes back gets
                     ``Tool result: <content>``, as after ``tools``
    flood            stream 8 KiB content pieces without end, until the client goes away
    finish:<reason>  finish_reason to send [stop]
    json             answer one chat.completion even when asked to stream
    ctype:<type>     label that chat.completion with this Content-Type (``none``: no
                     Content-Type header at all), as some servers do
    html             answer 200 with a web page
    no-usage         never send usage
    details          usage with prompt_tokens_details / completion_tokens_details
    refuse           the reply is a refusal (delta.refusal / message.refusal), not content
    reasoning[:<f>]  reason first: REASONING word by word in delta.<f> (message.<f> in
                     JSON), f being reasoning_content (DeepSeek, vLLM) by default or
                     reasoning (OpenRouter)
    no-done          end the body after the finish chunk, without [DONE]
    close            close the connection after the answer (despite keep-alive)

A request with ``logprobs: true`` gets ``choices[].logprobs`` (one token entry per word,
with ``top_logprobs`` alternatives); one with ``service_tier`` gets ``service_tier``
(``default`` for ``auto``) and ``system_fingerprint: fp_fake`` on every chunk.

Every request is logged in :attr:`FakeUpstream.requests` (headers, parsed body, the
client's port, and how it ended: ``completed``, ``client_closed`` with the time the
client went away, ``cut``...).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import select
import socket
import ssl
import threading
import time
import typing as t

DIRECTIVE = re.compile(r"\[\[([a-z-]+)(?::([^\]]*))?\]\]")
REASONING = "The user wrote something; I will repeat it."
# The error bodies OpenAI sends: status -> (message, type, code, param).
ERRORS = {
    400: (
        "Invalid value for 'temperature'.",
        "invalid_request_error",
        "invalid_value",
        "temperature",
    ),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key", None),
    403: ("You are not allowed to use this model.", "permission_error", None, None),
    404: ("The model `nope` does not exist.", "invalid_request_error", "model_not_found", None),
    429: ("Rate limit reached.", "rate_limit_error", "rate_limit_exceeded", None),
}


@dataclasses.dataclass
class Received:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]
    body: t.Any
    client_port: int
    started: float
    outcome: str = "running"
    ended: float | None = None

    @property
    def client_closed(self) -> bool:
        return self.outcome == "client_closed"


class ClientClosed(Exception):
    """The client went away while the fake was answering."""


class FakeUpstream:
    """Start with :meth:`start` (or ``with``); :attr:`base_url` ends in ``/v1``."""

    def __init__(self, tls: tuple[str, str] | None = None, **knobs: t.Any) -> None:
        """:param tls: (certificate file, key file) to serve HTTPS instead of HTTP."""
        self.tls = tls
        self.knobs: dict[str, t.Any] = dict(knobs)
        self.requests: list[Received] = []
        self.gate = threading.Semaphore(0)  # one release per word of a ``gated`` request
        self.closed_ports: set[int] = set()  # client ports of the connections it has closed
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        fake = self

        class Handler(_Handler):
            upstream = fake

        class Server(http.server.ThreadingHTTPServer):
            def process_request_thread(self, request: t.Any, client_address: t.Any) -> None:
                super().process_request_thread(request, client_address)
                with fake._lock:  # closed: a test can wait for the client to see it
                    fake.closed_ports.add(client_address[1])

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        # stop() waits for the serving loop's next poll: keep it short, tests stop often.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def chat_requests(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if "/chat/completions" in r.path]

    def chat_requests_mentioning(self, mark: str) -> list[Received]:
        """The chat requests whose body mentions ``mark`` (a test's unique marker)."""
        return [r for r in self.chat_requests() if mark in json.dumps(r.body)]

    def wait_for(
        self, predicate: t.Callable[[list[Received]], t.Any], timeout: float = 5.0
    ) -> t.Any:
        """Poll ``predicate(requests)`` until truthy; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.chat_requests())
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"fake upstream: condition not met; log: {self.requests}")
            time.sleep(0.01)

    def wait_ended(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """The first ``count`` chat requests, once they have all ended."""
        return self.wait_for(
            lambda rs: (
                rs[:count] if len(rs) >= count and all(r.ended for r in rs[:count]) else None
            ),
            timeout,
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: FakeUpstream
    timeout = 30  # an idle keep-alive connection is dropped after this

    def log_message(self, format: str, *args: t.Any) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        received = Received(
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client_port=self.client_address[1],
            started=time.monotonic(),
        )
        self.upstream.log(received)
        knobs = dict(self.upstream.knobs)
        if isinstance(body, dict):
            knobs.update(_directives(body.get("messages") or []))
        try:
            received.outcome = self._answer(body if isinstance(body, dict) else {}, knobs)
        except ClientClosed:
            received.outcome = "client_closed"
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            received.outcome = "client_closed"
            self.close_connection = True
        received.ended = time.monotonic()
        if knobs.get("close"):
            self.close_connection = True

    # -- answers -----------------------------------------------------------------------

    def _answer(self, body: dict[str, t.Any], knobs: dict[str, t.Any]) -> str:
        if not self.path.split("?")[0].endswith("/chat/completions"):
            self._send_json(404, _error("Unknown path.", "invalid_request_error", None, None))
            return "not_found"
        if knobs.get("stall"):
            self._wait(float(knobs["stall"]))
        if knobs.get("status"):
            status = int(knobs["status"])
            details = ERRORS.get(status, (f"fake error {status}", "server_error", "fake", None))
            self._send_json(status, _error(self._quoting_key(details[0], knobs), *details[1:]))
            return f"status:{status}"
        if knobs.get("plain"):
            self._send(int(knobs["plain"]), "text/plain", b"something went wrong")
            return f"plain:{knobs['plain']}"
        if knobs.get("html"):
            self._send(200, "text/html", b"<!doctype html><title>Web UI</title>")
            return "html"
        reply = _Reply(body, knobs)
        if knobs.get("json"):
            self._send_json(200, reply.completion())
            return "completed"
        if not body.get("stream"):
            return self._complete(reply, knobs)
        return self._stream(reply, knobs, body)

    def _complete(self, reply: _Reply, knobs: dict[str, t.Any]) -> str:
        """The answer to ``stream: false``: one ``chat.completion``, after the time its
        words would have taken to stream; the failure knobs fail it their JSON way."""
        if knobs.get("flood"):  # a body without end, until the client goes away
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                self._chunk(b" " * 8192)
        delay = float(knobs.get("delay") or 0)
        for _ in reply.words:
            if delay:
                self._wait(delay)
            if knobs.get("gated") and not self.upstream.gate.acquire(timeout=5):
                raise ClientClosed()  # nobody released the word: end without it
        if _int(knobs.get("malformed")) is not None:
            self._send(200, "application/json", b"{this is not json")
            return "malformed"
        if _int(knobs.get("error-frame")) is not None:
            message = self._quoting_key("The model crashed.", knobs)
            self._send_json(200, {"error": {"message": message, "type": "server_error"}})
            return "error_frame"
        data = json.dumps(reply.completion()).encode()
        if _int(knobs.get("cut")) is not None:  # half the body, then the connection drops
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return "cut"
        ctype = knobs.get("ctype")
        if isinstance(ctype, str):
            self.send_response(200)
            if ctype != "none":
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return "completed"
        self._send(200, "application/json", data)
        return "completed"

    def _stream(self, reply: _Reply, knobs: dict[str, t.Any], body: dict[str, t.Any]) -> str:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._frame(reply.chunk({"role": "assistant", "content": ""}))
        delay = float(knobs.get("delay") or 0)
        cut = _int(knobs.get("cut"))
        malformed = _int(knobs.get("malformed"))
        error_at = _int(knobs.get("error-frame"))
        while knobs.get("flood"):  # ends when a write finds the client gone
            self._frame(reply.chunk({"content": "x" * 8192}))
        for word in reply.reasoning_words:
            self._frame(reply.chunk({reply.reasoning_field: word}))
        for index, word in enumerate(reply.words):
            if index == cut:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return "cut"
            if index == malformed:
                self._chunk(b"data: {this is not json\n\n")
                self._end()
                return "malformed"
            if index == error_at:
                message = self._quoting_key("The model crashed.", knobs)
                self._frame({"error": {"message": message, "type": "server_error"}})
                self._frame("[DONE]")
                self._end()
                return "error_frame"
            if delay:
                self._wait(delay)
            if knobs.get("gated") and not self.upstream.gate.acquire(timeout=5):
                raise ClientClosed()  # nobody released the word: end without it
            key = "refusal" if reply.refuse else "content"
            self._frame(reply.chunk({key: word}, logprobs=reply.logprobs([word])))
        if reply.tools:
            for piece in reply.tool_pieces():
                self._frame(reply.chunk({"tool_calls": [piece]}))
        self._frame(reply.chunk({}, finish=reply.finish_reason))
        wants_usage = (body.get("stream_options") or {}).get("include_usage") is True
        if wants_usage and not knobs.get("no-usage"):
            self._frame({**reply.head(), "choices": [], "usage": reply.usage()})
        if not knobs.get("no-done"):
            self._frame("[DONE]")
        self._end()
        return "completed"

    def _quoting_key(self, message: str, knobs: dict[str, t.Any]) -> str:
        quote = knobs.get("quote-key")
        if not quote:
            return message
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if quote is not True:
            key = key[: int(quote)]
        return f"{message} Incorrect API key provided: {key}"

    # -- writing -----------------------------------------------------------------------

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: int, document: t.Any) -> None:
        self._send(status, "application/json", json.dumps(document).encode())

    def _frame(self, payload: t.Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._chunk(f"data: {text}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        if self._peer_closed(0):
            raise ClientClosed()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice at once when the client goes away."""
        if self._peer_closed(seconds):
            raise ClientClosed()

    def _peer_closed(self, timeout: float) -> bool:
        # The client sends nothing while it waits for the answer: readable means gone.
        readable, _, _ = select.select([self.connection], [], [], timeout)
        if not readable:
            return False
        try:
            if isinstance(self.connection, ssl.SSLSocket):  # TLS cannot peek
                return self.connection.recv(1) == b""
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except ssl.SSLWantReadError:
            return False
        except OSError:
            return True


class _Reply:
    """The deterministic answer to one request."""

    def __init__(self, body: dict[str, t.Any], knobs: dict[str, t.Any]) -> None:
        self.body = body
        self.calls = _calls(knobs)
        self.tools = bool(self.calls)
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        if self.tools:
            text = ""
        elif last.get("role") == "tool":
            text = f"Tool result: {_text(last)}"
        else:
            text = f"You said: {DIRECTIVE.sub('', _text(last)).strip()}"
        self.words = re.findall(r"\s*\S+", text)
        self.finish_reason = knobs.get("finish") or ("tool_calls" if self.tools else "stop")
        self.details = bool(knobs.get("details"))
        self.refuse = bool(knobs.get("refuse"))
        reasoning = knobs.get("reasoning")
        self.reasoning_field = reasoning if isinstance(reasoning, str) else "reasoning_content"
        self.reasoning_words = re.findall(r"\s*\S+", REASONING) if reasoning else []
        self.prompt_tokens = sum(len(_text(m).split()) for m in messages)
        self.created = int(time.time())

    def head(self) -> dict[str, t.Any]:
        head = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.body.get("model") or "fake",
        }
        tier = self.body.get("service_tier")
        if tier:
            head["service_tier"] = "default" if tier == "auto" else tier
            head["system_fingerprint"] = "fp_fake"
        return head

    def chunk(
        self, delta: dict[str, t.Any], finish: str | None = None, logprobs: t.Any = None
    ) -> dict[str, t.Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return {**self.head(), "choices": [choice]}

    def logprobs(self, words: list[str]) -> dict[str, t.Any] | None:
        """OpenAI's logprobs of ``words`` when the request asked for them."""
        if self.body.get("logprobs") is not True:
            return None
        alternatives = int(self.body.get("top_logprobs") or 0)

        def entry(token: str, logprob: float) -> dict[str, t.Any]:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

        content = [
            {**entry(word, -0.25), "top_logprobs": [
                entry(word if n == 0 else f"{word}#{n}", -0.25 * (n + 1))
                for n in range(alternatives)
            ]}
            for word in words
        ]  # fmt: skip
        return (
            {"content": None, "refusal": content}
            if self.refuse
            else {
                "content": content,
                "refusal": None,
            }
        )

    def usage(self) -> dict[str, t.Any]:
        completion = len(self.words) + (5 if self.tools else 0)
        usage: dict[str, t.Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if self.details:
            usage["prompt_tokens_details"] = {"cached_tokens": 2, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": 3,
                "accepted_prediction_tokens": 1,
                "rejected_prediction_tokens": 0,
            }
        return usage

    def tool_pieces(self) -> list[dict[str, t.Any]]:
        """The calls as stream deltas: the head of each with empty arguments, then the
        arguments in two pieces (short ones, such as ``{}``, come whole in the head)."""
        pieces: list[dict[str, t.Any]] = []
        for index, call in enumerate(self.calls):
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            whole = len(arguments) <= 2
            head = {"name": name, "arguments": arguments if whole else ""}
            pieces.append({"index": index, "id": call["id"], "type": "function", "function": head})
            if not whole:
                split = arguments.find(":") + 1 or len(arguments) // 2
                for piece in (arguments[:split], arguments[split:]):
                    pieces.append({"index": index, "function": {"arguments": piece}})
        return pieces

    def completion(self) -> dict[str, t.Any]:
        message: dict[str, t.Any] = {"role": "assistant", "content": "".join(self.words) or None}
        if self.refuse:
            message.update(content=None, refusal=message["content"])
        if self.reasoning_words:
            message[self.reasoning_field] = REASONING
        if self.tools:
            message["tool_calls"] = self.calls
        return {
            **self.head(),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": self.logprobs(self.words),
                }
            ],
            "usage": self.usage(),
        }


def _text(message: dict[str, t.Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _calls(knobs: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """The tool calls a ``tools`` or ``call:<name>:<json>`` request is answered with."""
    if knobs.get("tools"):
        return [
            {"id": "call_w1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_t2", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
        ]  # fmt: skip
    if isinstance(knobs.get("call"), str):
        name, _, arguments = knobs["call"].partition(":")
        return [
            {"id": f"call_{name}", "type": "function",
             "function": {"name": name, "arguments": arguments or "{}"}},
        ]  # fmt: skip
    return []


def _directives(messages: list[t.Any]) -> dict[str, t.Any]:
    # Only a user message that is the last one: a tool result that follows a [[tools]]
    # request must get an answer, not more tool calls.
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "user":
        return {name: value or True for name, value in DIRECTIVE.findall(_text(last))}
    return {}


def _int(value: t.Any) -> int | None:
    return None if value in (None, False) else int(value)


def _error(message: str, kind: str, code: str | None, param: str | None) -> dict[str, t.Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
