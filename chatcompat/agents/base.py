"""The agent contract: what a backend receives, what it yields, what it may raise.

An agent's :meth:`Agent.run` is a generator. It is called in its own greenlet (gevent
workers) or thread (gthread workers) by :mod:`chatcompat.run`, whose wire protocol
relays the events to the client. Agents always yield events; a non-streaming response is
the protocol draining them (a backend may fetch them in one piece when
``AgentRequest.stream`` is False).

Events, in order::

    Started?          the run was accepted (upstream answered 200, the process took
                      the prompt); optional, the first other event implies it
    TextDelta*        pieces of the assistant text, append-only (with log probabilities
                      when asked for)
    RefusalDelta*     pieces of a refusal (instead of text), append-only
    ReasoningDelta*   pieces of the model's reasoning (an upstream's reasoning_content
                      or reasoning, pi's thinking): relayed, never stored as text
    ToolCallDelta*    pieces of function tool calls
    ReplyInfo*        the upstream's service_tier / system_fingerprint, at any point
    Finish            exactly one, last: finish_reason and usage

Exceptions an agent may raise (anything else becomes a 500 ``internal_error``)::

    AgentError                 the agent failed (502 upstream_error)
    ├── AgentTimeout           the agent or its upstream timed out (504 timeout)
    ├── AgentUnavailable       no capacity right now (every process busy): 503
    │                          api_error / agent_unavailable with Retry-After
    └── AgentRejected          the upstream refused the request with a 4xx; its
                               status, type, code and message go to the client
"""

from __future__ import annotations

import dataclasses
import threading
import typing as t

from ..messages import Message

if t.TYPE_CHECKING:
    from ..settings import AgentConfig

# What an option check finds: the key path below the agent's entry, and what is wrong.
OptionProblem = tuple[tuple[str | int, ...], str]

# The optional request fields (OpenAI's names) that reach a backend in
# AgentRequest.params when it declares them in Agent.request_fields. The gateway itself
# handles messages, model, stream, stream_options, user, n and modalities (text only),
# and refuses the rest (see schemas/chat_request.json).
BACKEND_FIELDS: frozenset[str] = frozenset(
    {
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
        "verbosity",
        "service_tier",
        "metadata",
        "store",
        "prediction",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token counts of a run. The details are the upstream's ``prompt_tokens_details``
    and ``completion_tokens_details`` (``cached_tokens``, ``reasoning_tokens``...), as
    it reported them (integer entries only), or None."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: t.Mapping[str, int] | None = None
    completion_tokens_details: t.Mapping[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Started:
    """The run has been accepted; the gateway may now answer 200."""


@dataclasses.dataclass(frozen=True)
class Logprobs:
    """The log probabilities of one piece of the reply, OpenAI's token entries as the
    upstream sent them (``token``, ``logprob``, ``bytes``, ``top_logprobs``)."""

    content: list[dict[str, t.Any]] | None = None
    refusal: list[dict[str, t.Any]] | None = None


@dataclasses.dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant text; ``logprobs`` when the client asked for them
    (the text may then be empty: a piece of only log probabilities)."""

    text: str
    logprobs: Logprobs | None = None


@dataclasses.dataclass(frozen=True)
class RefusalDelta:
    """A piece of the model's refusal (OpenAI's ``refusal``: it declined to answer, for
    example under a ``json_schema`` response format), with its log probabilities."""

    text: str
    logprobs: Logprobs | None = None


@dataclasses.dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning, append-only. Protocols relay it (chat
    completions as ``reasoning_content``, Responses as a ``reasoning`` item); it is
    never part of the stored assistant message."""

    text: str


@dataclasses.dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``index``: the first piece carries ``id`` and ``name``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclasses.dataclass(frozen=True)
class ReplyInfo:
    """What the upstream said about how it served the run: OpenAI's ``service_tier``
    and ``system_fingerprint``. Sent when first seen (and again if they change)."""

    service_tier: str | None = None
    system_fingerprint: str | None = None


@dataclasses.dataclass(frozen=True)
class Finish:
    reason: str = "stop"  # "stop" | "length" | "tool_calls"
    usage: Usage | None = None


Event = Started | TextDelta | RefusalDelta | ReasoningDelta | ToolCallDelta | ReplyInfo | Finish


@dataclasses.dataclass(frozen=True)
class InputImage:
    """An image of the new turn that the agent's image policy accepted, for a backend
    that needs the bytes (:attr:`Agent.needs_image_bytes`): a data URI's bytes with
    their sniffed type, or a remote URL the backend fetches
    (:mod:`chatcompat.agents.image_fetch`). ``param`` names the part in the request,
    for a refusal (400) of what the fetch brings."""

    param: str
    data: bytes | None = dataclasses.field(default=None, repr=False)
    mime_type: str | None = None
    url: str | None = None


@dataclasses.dataclass
class AgentRequest:
    """Everything one run needs, already shaped by :mod:`chatcompat.history`.

    ``messages`` are OpenAI-shaped chat messages without system/developer entries:
    the history first (``history_count`` of them), then the new turn.
    ``system_prompt`` is the agent's own prompt followed by the request's
    system/developer texts. ``params`` holds the forwarded request fields
    (``temperature``, ``max_tokens``, ``stop`` as a list, ``tools``...), only those
    the client sent (not null); they are all of the backend's ``request_fields``,
    since a request with any other one is refused before the run.
    ``model`` is the upstream model the client chose for this run with
    ``x-openclaw-model`` (one of the agent's ``models``), None for the agent's own.
    ``stream`` is False when the client takes the reply whole (a JSON response): a
    backend may then ask its upstream for one completion instead of a stream, which
    costs both sides less; it still yields the same events.
    ``images`` are the new turn's images in the order of their parts, for a backend
    that needs bytes (:attr:`Agent.needs_image_bytes`; empty for the others, which
    read the ``image_url`` parts of ``messages``).
    """

    agent_id: str
    session_key: str
    messages: list[Message]
    history_count: int = 0
    system_prompt: str | None = None
    params: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    model: str | None = None
    images: tuple[InputImage, ...] = ()
    stream: bool = True


class AgentError(Exception):
    """The agent run failed."""

    def __init__(self, message: str = "The agent run failed.") -> None:
        super().__init__(message)
        self.message = message


class AgentTimeout(AgentError):
    """The agent (or its upstream) did not answer in time."""

    def __init__(self, message: str = "The agent did not answer in time.") -> None:
        super().__init__(message)


class AgentRejected(AgentError):
    """The upstream answered with a 4xx; the client gets the same status and details."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param


class AgentUnavailable(AgentError):
    """The agent has no capacity for this run now (all its processes are busy).

    Nothing was run: the client gets 503 ``agent_unavailable`` and a ``Retry-After``.
    """

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Cancellation:
    """Tells a running agent that its client went away or its time is up.

    Agents poll :attr:`is_set` between steps, or register a callback (for example
    one that closes an upstream socket) to be interrupted at once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[t.Callable[[], None]] = []
        # Under gthread, on_cancel and cancel may race: a callback registered between
        # cancel's set() and its swap of the list would never run.
        self._lock = threading.Lock()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; return True as soon as cancelled."""
        return self._event.wait(timeout)

    def on_cancel(self, callback: t.Callable[[], None]) -> None:
        """Call ``callback`` when cancelled (at once if already cancelled)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a failing cleanup must not stop the others
                pass


class Agent:
    """Base class of agent backends.

    One instance per configured agent per worker process, created lazily on first
    use (gunicorn's gevent worker patches sockets after fork, so nothing may be
    opened at import or construction time in the master).

    ``options_schema`` is the JSON Schema of the backend's own options in
    ``agents.list[]``; the configuration loader validates them with it, and calls
    :meth:`check_options` for what a schema cannot say.
    ``accepts_images`` says whether ``image_url`` content parts reach the agent;
    ``needs_image_bytes`` that it takes them as bytes (``AgentRequest.images``).
    ``request_fields`` names the optional request fields (of :data:`BACKEND_FIELDS`)
    the backend takes: they reach it in ``AgentRequest.params``; a request that sends
    any other one (not null) is refused with 400 ``unsupported_parameter`` before the
    run, so nothing a client asked for is dropped in silence. None by default.
    ``takes_extension_fields`` says whether keys outside OpenAI's request (provider
    extensions such as vLLM's ``top_k`` or ``min_p``) reach the backend in
    ``AgentRequest.params`` as they were sent; when it is False they are refused
    (400 ``unknown_parameter``).
    ``stops_at_once`` says that a cancelled run returns at once, its clean-up never
    waiting: a JSON client's run may then go in the request's own greenlet
    (:class:`chatcompat.run.Run`); otherwise it runs on its own, as a stream's does,
    so that a timeout or an error is answered while the agent winds down.
    """

    name: t.ClassVar[str] = ""
    options_schema: t.ClassVar[dict[str, t.Any]] = {"type": "object"}
    # Backends that cannot take images get their image_url parts removed (and logged).
    accepts_images: t.ClassVar[bool] = False
    # Backends that send images as bytes (pi) get the new turn's in AgentRequest.images,
    # and fetch its remote URLs themselves (agents.image_fetch); their history is text.
    needs_image_bytes: t.ClassVar[bool] = False
    request_fields: t.ClassVar[frozenset[str]] = frozenset()
    # Whether the backend gets the request's ``user`` in ``params`` when ``user`` selects
    # no session (``sessions.userKeys: false``); otherwise the gateway keeps it.
    takes_user: t.ClassVar[bool] = False
    takes_extension_fields: t.ClassVar[bool] = False
    stops_at_once: t.ClassVar[bool] = False

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    @classmethod
    def check_options(
        cls, options: t.Mapping[str, t.Any], environ: t.Mapping[str, str]
    ) -> list[OptionProblem]:
        """Check the options beyond ``options_schema``, at start-up; the configuration
        loader calls it for every configured agent of this backend (before the schema,
        on options it may also find wrong). Messages never quote a secret. None by
        default.

        :param options: the agent's backend-specific options, not yet validated.
        :param environ: the gateway's environment.
        :return: one (key path below the agent's entry, message) per problem.
        """
        return []

    @classmethod
    def check_model_choice(cls, options: t.Mapping[str, t.Any]) -> str | None:
        """What keeps this backend from running a model a request chooses with
        ``x-openclaw-model`` (the agent lists ``models``), at start-up; None: nothing.

        :param options: the agent's backend-specific options.
        """
        return None

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        """Run the agent and yield its events, ending with one :class:`Finish`.

        Must stop soon after ``cancel`` is set (the gateway's Run stops reading and closes
        the generator). May raise only :class:`AgentError` subclasses.
        """
        raise NotImplementedError("The 'run' method must be implemented.")

    def close(self) -> None:
        """Release connections or child processes."""

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
