"""The ``openai`` backend: any OpenAI-compatible upstream (OpenAI, vLLM, llama.cpp's
server, Ollama, LM Studio, LiteLLM...).

A run for a streaming client POSTs ``<baseUrl>/chat/completions`` with ``stream: true``
and ``stream_options.include_usage``, yields :class:`Started` once the upstream answered
200, then relays the SSE chunks as they arrive. A run for a JSON client
(``AgentRequest.stream`` False) asks for one ``chat.completion`` (``stream: false``) and
yields the same events from it: decoding one document costs the gateway and the
upstream less than a stream of chunks, and the client waits for the end either way.
Whichever the upstream answers (JSON or SSE) is read. HTTP is stdlib ``http.client`` with a small
keep-alive pool per agent and worker (``bench/http_clients.py`` measured it against
urllib3, httpx and geventhttpclient under gevent: the least CPU of the clients that
also work under gthread). Owning the socket is what lets a cancelled run cut the
upstream connection at once, even while the upstream is still thinking about its
headers.

What goes wrong upstream, and what the client sees::

    upstream                                   raised here            client
    HTTP 4xx (OpenAI error body or not)        AgentRejected          same status, type, code,
                                                                      message (401/403 say so)
    HTTP 5xx or any other non-200              AgentError             502 upstream_error
    refused, DNS failure, TLS failure          AgentError             502 upstream_error
    no TCP/TLS connection in connectTimeout    AgentTimeout           504 timeout
    no byte for timeoutSeconds                 AgentTimeout           504 timeout
    dropped mid-stream, not SSE/JSON,
      error event, stream without an end       AgentError             502, or the error frame
    client went away (``cancel``)              nothing: the run ends  (the run stopped)

Before :class:`Started` these become plain HTTP errors; after it, one error frame.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import threading
import typing as t
import urllib.parse

from .. import fastjson
from ..messages import Message
from .api_keys import SendsAPIKey
from .api_keys import read_api_key
from .base import BACKEND_FIELDS
from .base import Agent
from .base import AgentError
from .base import AgentRejected
from .base import AgentRequest
from .base import Cancellation
from .base import Event
from .base import Finish
from .base import ReplyInfo
from .base import Started
from .base import Usage
from .openai_replies import chunk_events
from .openai_replies import completion_events
from .openai_replies import default_error_type
from .openai_replies import error_details
from .openai_replies import finish_reason_of
from .openai_replies import parse_json
from .openai_replies import reply_info_of
from .openai_replies import usage_of
from .upstream_http import ConnectionPool
from .upstream_http import Hold
from .upstream_http import SSEDecoder
from .upstream_http import mapped_errors

if t.TYPE_CHECKING:
    from ..settings import AgentConfig

log = logging.getLogger(__name__)

READ_SIZE = 65536
MAX_ERROR_BODY = 65536
MAX_JSON_BODY = 32 * 1024 * 1024
DRAIN_SECONDS = 2.0  # after [DONE], how long the end of the body may take
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# scheme://host[:port][/path][?query]; no user:password@ (it would end up in messages).
_BASE_URL = (
    r"^https?://([A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s?#]*)?(\?[^\s#]*)?$"
)


class OpenAIAgent(SendsAPIKey, Agent):
    """An agent answered by an OpenAI-compatible ``/chat/completions`` upstream.

    Built lazily in each worker; its connection pool opens on the first run and is
    closed by :meth:`close`. Safe to run from many greenlets or threads at once.
    """

    name = "openai"
    accepts_images = True
    # A cancel cuts the upstream connection; a connect that cannot be cut ends by the
    # run's deadline (connectTimeoutSeconds is capped at timeoutSeconds).
    stops_at_once = True
    request_fields = BACKEND_FIELDS  # all of them, sent upstream as the client sent them
    # ``user`` too when it selects no session (sessions.userKeys false): OpenAI's own
    # end-user id, passed on.
    takes_user = True
    # The upstream decides on keys OpenAI's API does not have (vLLM takes top_k,
    # OpenAI refuses it with a 400 that comes back as it is).
    takes_extension_fields = True
    options_schema: t.ClassVar[dict[str, t.Any]] = {
        "type": "object",
        "properties": {
            "baseUrl": {
                "type": "string",
                "pattern": _BASE_URL,
                "description": "The upstream's API root, e.g. http://127.0.0.1:8000/v1;"
                " requests go to <baseUrl>/chat/completions. No user:password@.",
            },
            "apiKey": {"type": "string", "minLength": 1, "description": "Sent as a Bearer token."},
            "apiKeyEnv": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                "description": "The environment variable that holds the key, read when the"
                " agent runs. apiKey wins when both are set (agents.defaults may set one).",
            },
            "model": {"type": "string", "minLength": 1, "description": "The upstream's model."},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": _HEADER_NAME},
                # Control characters and surrounding whitespace are refused by the
                # config loader, without quoting the value (api_keys.SendsAPIKey).
                "additionalProperties": {"type": "string"},
                "description": "Extra request headers (they win over the defaults).",
            },
            "params": {
                "type": "object",
                "description": "Default request fields (temperature...); the request's win.",
            },
            "connectTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "default": 10},
            "maxTokensField": {
                "enum": ["max_tokens", "max_completion_tokens"],
                "default": "max_tokens",
                "description": "The name the request's token limit is sent under.",
            },
        },
        "required": ["baseUrl", "model"],
        "additionalProperties": False,
    }

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        options = config.options
        url = urllib.parse.urlsplit(options["baseUrl"])
        self._scheme = url.scheme.lower()
        self._host = url.hostname or ""
        try:
            self._port = url.port or (443 if self._scheme == "https" else 80)
        except ValueError:  # "host:99999" passes the schema; the run says so
            self._port = 0
        self._where = url.netloc  # names the upstream in messages (never holds credentials)
        query = f"?{url.query}" if url.query else ""  # Azure's api-version, for one
        self._path = url.path.rstrip("/") + "/chat/completions" + query
        self._model = options["model"]
        self._extra_headers = dict(options.get("headers") or {})
        self._max_tokens_field = options.get("maxTokensField", "max_tokens")
        defaults = dict(options.get("params") or {})
        limit = defaults.pop("max_completion_tokens", None)
        limit = defaults.pop("max_tokens", None) if limit is None else limit
        if limit is not None:
            defaults["max_tokens"] = limit  # renamed like the request's, see _payload
        self._defaults = defaults
        # timeoutSeconds is the agent's generic key: the whole run (the run's deadline)
        # and, here, the longest silence between two bytes from the upstream.
        self._read_timeout = float(config.timeout_seconds)
        # A connect cannot be cut by a cancel, so it never outlasts the run's deadline:
        # a JSON run waits for its agent where the request is (stops_at_once).
        self._connect_timeout = min(
            float(options.get("connectTimeoutSeconds", 10)), self._read_timeout
        )
        self._pool: ConnectionPool | None = None  # opened on the first run, in the worker
        self._pool_lock = threading.Lock()

    # -- the run -----------------------------------------------------------------------

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        """Stream one completion from the upstream (see the module docstring for errors).

        :param request: the messages, system prompt and params to send.
        :param cancel: cancelling it shuts the upstream socket down at once.
        :raise AgentError: with :class:`AgentTimeout` and :class:`AgentRejected`.
        """
        body = fastjson.dumps_bytes(self._payload(request))
        headers = self._headers(request.stream)
        hold = Hold()
        cancel.on_cancel(hold.cut)
        pool = self._get_pool()
        conn = None
        reusable = False
        finish: Finish | None = None
        try:
            with mapped_errors(self._where, self._read_timeout, cancel):
                conn, response = self._send(pool, body, headers, hold)
                content_type = response.getheader("Content-Type", "").lower()
                if response.status != 200:
                    raise self._refusal(response)
                if content_type.startswith("text/html"):
                    raise AgentError(
                        f"The upstream {self._where} answered a web page, not an event stream:"
                        " is baseUrl the API root (often ending in /v1)?"
                    )
                whole = content_type.startswith("application/json") or (
                    # A JSON client asked for one completion: some servers label it
                    # text/plain or not at all; only an event stream is relayed as one.
                    not request.stream and not content_type.startswith("text/event-stream")
                )
                if whole:
                    # Asked for (a JSON client), or an upstream that ignored stream: true.
                    # Read it all first, so a bad body is still a plain HTTP error for the
                    # client. A cancel shuts the socket down, which ends this read.
                    raw = response.read(MAX_JSON_BODY + 1)
                    if len(raw) > MAX_JSON_BODY:
                        raise AgentError(
                            f"The upstream {self._where} sent a completion larger than"
                            f" {MAX_JSON_BODY // (1024 * 1024)} MiB."
                        )
                    document = parse_json(raw, self._where)
                    try:
                        events = list(completion_events(document, self._where))
                    except (TypeError, ValueError, AttributeError) as exc:
                        raise AgentError(
                            f"The upstream {self._where} sent a malformed completion."
                        ) from exc
                    finish = t.cast(Finish, events.pop())  # always the last event
                    yield Started()
                    yield from events
                else:
                    yield Started()
                    finish = yield from self._relay(response, conn, cancel)
                reusable = response.isclosed() and not response.will_close and not cancel.is_set
        finally:
            hold.release()
            if conn is not None and not (reusable and pool.put(conn)):
                conn.close()
        # Last, with the connection already back in the pool: the gateway's Run ends
        # (and cancels, which must not reach a released socket) once it has Finish.
        if finish is not None:
            yield finish

    def _relay(
        self,
        response: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        cancel: Cancellation,
    ) -> t.Generator[Event, None, Finish | None]:
        """Yield the stream's deltas; return its Finish (None when cancelled)."""
        decoder = SSEDecoder()
        reason: str | None = None
        usage: Usage | None = None
        info = ReplyInfo()
        done = False
        while not done:
            data = response.read1(READ_SIZE)
            if cancel.is_set:
                return None
            events = decoder.feed(data) if data else decoder.flush()
            for payload in events:
                if payload.strip() == "[DONE]":
                    done = True
                    break
                chunk = parse_json(payload, self._where)
                try:
                    usage = usage_of(chunk.get("usage")) or usage
                    events_of_chunk = list(chunk_events(chunk))
                    seen = reply_info_of(chunk)
                except (TypeError, ValueError, AttributeError) as exc:
                    raise AgentError(f"The upstream {self._where} sent a malformed chunk.") from exc
                if seen is not None and seen != info:
                    info = seen
                    yield info  # before the chunk's deltas, so they carry it
                for event in events_of_chunk:
                    if isinstance(event, str):
                        reason = event
                    else:
                        yield event
            if not data:
                break
        if not done and reason is None:
            raise AgentError(f"The upstream {self._where} ended the stream before finishing.")
        if done and not response.isclosed() and conn.sock is not None:
            # Read the end of the body now, so the connection can go back to the pool.
            conn.sock.settimeout(DRAIN_SECONDS)
            with contextlib.suppress(OSError, http.client.HTTPException):
                while response.read1(READ_SIZE):
                    pass
            if conn.sock is not None:
                conn.sock.settimeout(self._read_timeout)
        return Finish(finish_reason_of(reason), usage)

    # -- building the request ------------------------------------------------------------

    def _payload(self, request: AgentRequest) -> dict[str, t.Any]:
        payload = {**self._defaults, **request.params}
        limit = payload.pop("max_tokens", None)
        if limit is not None:
            payload[self._max_tokens_field] = limit
        messages: list[Message] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages.extend(_upstream_message(message) for message in request.messages)
        payload.update(model=request.model or self._model, messages=messages)
        if request.stream:
            payload.update(stream=True, stream_options={"include_usage": True})
        else:
            # A whole completion always has its usage (OpenAI refuses stream_options here).
            payload["stream"] = False
        return payload

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": "chatcompat",
        }
        key = read_api_key(self.config.options, self.config.id)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(self._extra_headers)
        return headers

    # -- the connection --------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                if not self._port:
                    raise AgentError(f"The baseUrl of agent {self.config.id!r} has a bad port.")
                self._pool = ConnectionPool(
                    self._scheme, self._host, self._port, self._connect_timeout, self._read_timeout
                )
            return self._pool

    def _send(
        self, pool: ConnectionPool, body: bytes, headers: dict[str, str], hold: Hold
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request; return the connection and the response (headers read)."""
        while True:
            conn, reused = pool.get(self._where)
            hold.attach(conn)
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError):
                hold.release()
                conn.close()
                if not reused or hold.is_cut:
                    raise
                # A pooled connection the upstream had just closed: once more on a new one.
            except BaseException:
                hold.release()
                conn.close()
                raise

    def _refusal(self, response: http.client.HTTPResponse) -> AgentError:
        """The error for a non-200 answer (its body is read, up to a limit).

        Some upstreams quote the key they refused: the message keeps it, and the
        gateway redacts it wherever text leaves (chatcompat.redaction).
        """
        raw = response.read(MAX_ERROR_BODY)
        status = response.status
        message, kind, code, param = error_details(raw)
        if not message:
            message = f"{response.reason or 'no message'} (POST {self._path})"
        log.warning("upstream %s answered %d", self._where, status)
        if 400 <= status < 500:
            if status in (401, 403):
                message = (
                    f"The upstream {self._where} refused the gateway's credentials for agent"
                    f" {self.config.id!r} ({status}): {message}"
                )
            return AgentRejected(status, message, kind or default_error_type(status), code, param)
        return AgentError(f"The upstream {self._where} answered {status}: {message}")

    def close(self) -> None:
        """Close the idle connections; running streams close theirs when they end."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


# -- what the upstream said --------------------------------------------------------------


def _upstream_message(message: Message) -> Message:
    """The message as the upstream takes it: ``input_text`` parts (Responses API style,
    accepted by the gateway) become chat ``text`` parts; everything else as is."""
    content = message.get("content")
    if not isinstance(content, list) or not any(
        isinstance(part, dict) and part.get("type") == "input_text" for part in content
    ):
        return message
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "input_text":
            text = part.get("text")
            if not isinstance(text, str):
                text = part.get("input_text", "")
            part = {"type": "text", "text": text}
        parts.append(part)
    return {**message, "content": parts}
