"""The blocking adapter between a request and an agent run.

One :class:`Run` per request: it takes the session lock, builds the agent's input,
runs the agent in its own thread (a greenlet under gevent workers, a real thread
under gthread workers) that feeds a queue, and hands the events to the response
side, which is either :meth:`Run.complete` (JSON) or :meth:`Run.sse` (a stream).
Reading the queue with a timeout is what lets keepalives flow while the agent is
silent, and what lets the gateway notice a client that went away and cancel the run.
The turn is stored only when the run finished; then the lock is released. A request
with an ``Idempotency-Key`` first claims it (:meth:`Run.claim`, renewed like the lock),
and its reply is stored in the same write as its turn.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
import time
import typing as t
import uuid

from . import errors
from . import history
from . import protocol
from .agents.base import AgentError
from .agents.base import AgentRejected
from .agents.base import AgentRequest
from .agents.base import AgentTimeout
from .agents.base import AgentUnavailable
from .agents.base import Cancellation
from .agents.base import Finish
from .agents.base import RefusalDelta
from .agents.base import ReplyInfo
from .agents.base import Started
from .agents.base import TextDelta
from .agents.base import ToolCallDelta
from .agents.base import Usage
from .sessions.base import KeyedReply
from .sessions.base import StoreError
from .sessions.base import StoreUnavailable
from .streaming import DONE_FRAME
from .streaming import KEEPALIVE_FRAME
from .streaming import data_frame
from .streaming import peer_closed

if t.TYPE_CHECKING:
    from .agents.base import Agent
    from .idempotency import Idempotency
    from .requestlog import RequestRecord
    from .sessions.base import IdempotencyRecord
    from .sessions.base import SessionStore
    from .settings import AgentConfig
    from .settings import Settings

log = logging.getLogger(__name__)

Message = dict[str, t.Any]

# How often a waiting response checks that its client is still there.
DISCONNECT_POLL_SECONDS = 0.5
LOCK_POLL_SECONDS = (0.01, 0.25)  # first and longest pause between lock attempts
# A held lock is short-lived and renewed while its run is alive, so the lock of a
# worker that died (SIGKILL, host lost) frees itself within LOCK_TTL_SECONDS.
LOCK_TTL_SECONDS = 30.0
LOCK_RENEW_SECONDS = 10.0
# A stream whose client stopped reading holds the server in a send, where the event
# pump cannot look at the deadline: a watchdog ends the run this long after it.
DEADLINE_GRACE_SECONDS = 1.0
# A turn write that failed may have landed all the same (Redis ran it, the reply was
# lost): it is sent again, with the same turn id, so it lands at most once.
TURN_WRITE_ATTEMPTS = 3
TURN_WRITE_PAUSE_SECONDS = 0.2
QUEUE_SIZE = 256
MAX_BATCH_FRAMES = 64  # frames sent in one write at most


class ClientGone(errors.APIError):
    """The client closed its connection; the run was cancelled (logged as 499, like nginx)."""

    status = 499
    code = "client_closed_request"
    message = "The client closed the connection."


class _End:
    """The agent generator returned."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Keepalive:
    """Nothing happened for a keepalive interval."""


KEEPALIVE = _Keepalive()


class Run:
    """One agent run for one request: :meth:`start`, then :meth:`complete` or :meth:`sse`."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: SessionStore,
        agent: Agent,
        agent_config: AgentConfig,
        session_key: str,
        sticky: bool,
        model: str,
        client_socket: socket.socket | None,
        record: RequestRecord,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.agent = agent
        self.agent_config = agent_config
        self.session_key = session_key
        self.sticky = sticky
        self.model = model
        self.record = record
        self.idempotency = idempotency
        self._socket = client_socket
        self._owner = uuid.uuid4().hex
        self._turn_id = uuid.uuid4().hex
        self._locked = False
        self._claimed = False
        self._write_unknown = False  # a turn write whose outcome nobody knows
        self._lock_renewed = 0.0
        self._closed = False
        self._finished = False
        self._cancel = Cancellation()
        self._queue: queue.Queue[t.Any] = queue.Queue(QUEUE_SIZE)
        self._deadline = 0.0
        self._peer_check_at = 0.0
        self._pending: t.Any = None  # an event read early by start()
        self._turn_to_store: list[Message] = []
        self.id = protocol.completion_id()
        self.created = int(time.time())

    # -- start ------------------------------------------------------------------

    def claim(self) -> IdempotencyRecord | None:
        """Claim the request's Idempotency-Key (before :meth:`start`; none: no-op).

        :return: the finished record of an earlier request with the key, whose reply
            the caller sends instead of running; None when this run goes ahead.
        :raise errors.IdempotencyKeyReused: the key belongs to a different request.
        :raise errors.IdempotencyKeyInUse: the request with the key is still running.
        :raise errors.StoreUnavailable: the store cannot say.
        """
        if self.idempotency is None:
            return None
        held = _store_call(
            self.store.claim_idempotency,
            self.idempotency.scope,
            self._owner,
            self.idempotency.fingerprint,
            LOCK_TTL_SECONDS,
        )
        if held is None:
            self._claimed = True
            self._lock_renewed = time.monotonic()
            return None
        if held.fingerprint != self.idempotency.fingerprint:
            raise errors.IdempotencyKeyReused(param="Idempotency-Key")
        if held.running:
            raise errors.IdempotencyKeyInUse(param="Idempotency-Key")
        return held

    def start(self, conversation: history.Conversation, params: dict[str, t.Any]) -> None:
        """Lock the session, build the input, start the agent and wait until it has
        accepted the run. Errors up to here are plain HTTP errors.

        :raise errors.APIError: 409/5xx before anything was sent.
        """
        system_text, earlier, new_turn = conversation
        timeout = self.agent_config.timeout_seconds
        limit = self.agent_config.history_limit
        if limit is None:
            limit = self.settings.history_limit
        # A key generated for this request is known to nobody else yet: no lock to
        # take and no history to read (half the store work of a stateless request).
        try:
            if self.sticky:
                lock_wait = self.settings.lock_timeout_seconds
                self._acquire_lock(timeout if lock_wait is None else lock_wait)
                stored = _store_call(self.store.load_history, self.session_key, limit)
            else:
                # The turn must be storable before an agent spends anything on it.
                _store_call(self.store.ping)
                stored = None
            past = history.choose_history(stored, earlier, limit)
            # A new session keeps what the agent saw as its first turn, so the next
            # request (which sends only the key) continues the same conversation.
            self._turn_to_store = (past if stored is None else []) + new_turn
            sent = past + new_turn
            if not self.agent.accepts_images:
                sent = history.drop_images(sent, agent_id=self.agent_config.id)
            request = AgentRequest(
                agent_id=self.agent_config.id,
                session_key=self.session_key,
                messages=sent,
                history_count=len(past),
                system_prompt=history.join_system_prompts(
                    self.agent_config.system_prompt, system_text
                ),
                params=params,
            )
            self._deadline = time.monotonic() + timeout
            _spawn(self._produce, request)
            first = self._next(keepalive=None)
            if not isinstance(first, Started):
                self._pending = first
        except BaseException:
            self.close()
            raise

    def _acquire_lock(self, wait_seconds: float) -> None:
        give_up = time.monotonic() + wait_seconds
        pause, longest = LOCK_POLL_SECONDS
        while not _store_call(
            self.store.acquire_lock, self.session_key, self._owner, LOCK_TTL_SECONDS
        ):
            now = time.monotonic()
            if now >= give_up:
                raise errors.SessionBusy()
            if now >= self._peer_check_at:
                self._check_client(now)
            if self._claimed and now - self._lock_renewed >= LOCK_RENEW_SECONDS:
                self._renew_lock()
            # time.sleep is cooperative under gevent: the worker keeps serving.
            time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            pause = min(pause * 2, longest)
        self._locked = True
        self._lock_renewed = time.monotonic()

    def _renew_lock(self) -> None:
        """Keep the lock and the idempotency claim while the run is alive (taking them
        again refreshes our own)."""
        self._lock_renewed = time.monotonic()
        try:
            if self._locked and not self.store.acquire_lock(
                self.session_key, self._owner, LOCK_TTL_SECONDS
            ):
                log.warning("the lock of a running session expired and was taken by another run")
            if self._claimed and self.idempotency is not None:
                scope, fingerprint = self.idempotency.scope, self.idempotency.fingerprint
                if self.store.claim_idempotency(scope, self._owner, fingerprint, LOCK_TTL_SECONDS):
                    log.warning("the claim of a running request expired and was taken")
        except StoreError:  # StoreUnavailable included
            return  # the turn cannot be stored either; the end of the run will say so

    def _produce(self, request: AgentRequest) -> None:
        """The agent's own greenlet/thread: run it and feed the queue."""
        events = None
        try:
            events = self.agent.run(request, self._cancel)
            for event in events:
                if not self._put(event):
                    return
            self._put(_End())
        except BaseException as exc:  # everything goes to the response side
            self._put(_Failed(exc))
        finally:
            if events is not None and hasattr(events, "close"):
                try:
                    events.close()
                except Exception:
                    log.exception("agent %s failed to close its run", self.agent_config.id)

    def _check_client(self, now: float) -> None:
        """Cancel the run when the client has closed its connection.

        Checked on a timer, whether or not the agent is producing: a chatty agent
        must not keep an abandoned run going until its end.

        :raise ClientGone: the client is gone (the run is cancelled).
        """
        self._peer_check_at = now + DISCONNECT_POLL_SECONDS
        if self._socket is not None and peer_closed(self._socket):
            self._cancel.cancel()
            raise ClientGone()

    def _put(self, item: t.Any) -> bool:
        while not self._cancel.is_set:
            try:
                self._queue.put(item, timeout=DISCONNECT_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    # -- reading events ----------------------------------------------------------

    def _next(self, keepalive: float | None) -> t.Any:
        """The next agent event, or KEEPALIVE after ``keepalive`` silent seconds.

        :raise ClientGone: the client closed the connection (the run is cancelled).
        :raise errors.APIError: the agent failed or ran out of time.
        """
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        keepalive_at = None if keepalive is None else time.monotonic() + keepalive
        while True:
            now = time.monotonic()
            # Checked before reading: a producer that keeps the queue full must not
            # run past the agent's timeout.
            if now >= self._deadline:
                self._time_out()
            if now >= self._peer_check_at:
                self._check_client(now)
            if (self._locked or self._claimed) and now - self._lock_renewed >= LOCK_RENEW_SECONDS:
                self._renew_lock()
            wait = min(DISCONNECT_POLL_SECONDS, self._deadline - now)
            if keepalive_at is not None:
                wait = min(wait, keepalive_at - now)
            try:
                item = self._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                now = time.monotonic()
                if now >= self._deadline:
                    self._time_out()
                if keepalive_at is not None and now >= keepalive_at:
                    return KEEPALIVE
                continue
            if isinstance(item, _Failed):
                raise _api_error(item.exc)
            if isinstance(item, _End):
                raise errors.UpstreamFailed("The agent ended without finishing its reply.")
            return item

    def _time_out(self) -> t.NoReturn:
        self._cancel.cancel()
        raise errors.GatewayTimeout(
            f"The agent did not finish within {self.agent_config.timeout_seconds:g} s."
        )

    def events(self, keepalive: float | None = None) -> t.Iterator[t.Any]:
        """Agent events up to and including :class:`Finish`, with KEEPALIVE markers."""
        while True:
            item = self._next(keepalive)
            if isinstance(item, Started):
                continue
            yield item
            if isinstance(item, Finish):
                return

    # -- finishing ---------------------------------------------------------------

    def _store_turn(self, reply: _Reply, completion: dict[str, t.Any]) -> None:
        """Store the finished turn (the run's only write of it), with ``completion``
        under the request's Idempotency-Key, and record its usage."""
        # A client that left before the end gets nothing stored (SPEC 8: no half turns).
        self._check_client(time.monotonic())
        message: Message = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        ttl = (
            self.settings.session_ttl_seconds
            if self.sticky
            else self.settings.stateless_ttl_seconds
        )
        keyed = None
        if self.idempotency is not None:
            keyed = KeyedReply(self.idempotency.scope, self.idempotency.fingerprint, completion)
        self._write_turn([*self._turn_to_store, message], ttl, keyed)
        self._finished = True
        self.record.set_usage(reply.usage)

    def _write_turn(self, messages: list[Message], ttl: float, keyed: KeyedReply | None) -> None:
        """Append the turn, sending it again while the outcome is unknown.

        :raise errors.TurnMayNotBeStored: no attempt was confirmed, and one may have
            landed (a Redis that ran the command and lost the reply).
        :raise errors.APIError: the store refused the turn (nothing stored).
        """
        for attempt in range(1, TURN_WRITE_ATTEMPTS + 1):
            try:
                stored = self.store.append_turn(
                    self.session_key,
                    self.agent_config.id,
                    messages,
                    sticky=self.sticky,
                    ttl_seconds=ttl,
                    turn_id=self._turn_id,
                    keyed_reply=keyed,
                )
            except StoreUnavailable as exc:
                log.warning("session store unavailable while storing a turn: %s", exc)
                if attempt == TURN_WRITE_ATTEMPTS:
                    self._write_unknown = True
                    raise errors.TurnMayNotBeStored(keyed=keyed is not None) from exc
                time.sleep(TURN_WRITE_PAUSE_SECONDS * attempt)  # cooperative under gevent
                continue
            except StoreError as exc:
                # This attempt stored nothing, but an earlier one may have.
                log.error("session store error: %s", exc)
                if attempt > 1:
                    self._write_unknown = True
                    raise errors.TurnMayNotBeStored(keyed=keyed is not None) from exc
                message = "The session store could not save or read this turn."
                raise errors.APIError(message) from exc
            if not stored and attempt == 1:
                # Not a resend of ours: the key's request finished in another run
                # (our claim had expired), which stored its own turn and reply.
                log.warning("a request with this idempotency key was stored by another run")
            return

    def _completion(self, reply: _Reply) -> dict[str, t.Any]:
        """The ``chat.completion`` object of the finished reply."""
        return protocol.completion(
            id=self.id,
            created=self.created,
            model=self.model,
            content=reply.content,
            tool_calls=reply.tool_calls or None,
            finish_reason=reply.finish_reason,
            usage=reply.usage_dict(),
            logprobs=reply.logprobs_dict(),
            service_tier=reply.service_tier,
            system_fingerprint=reply.system_fingerprint,
            refusal=reply.refusal,
        )

    def complete(self) -> dict[str, t.Any]:
        """Drain the run into a ``chat.completion`` object (stored before returning)."""
        try:
            reply = _Reply()
            for event in self.events():
                reply.add(event)
            completion = self._completion(reply)
            self._store_turn(reply, completion)
            return completion
        finally:
            self.close()

    def sse(self, include_usage: bool) -> t.Iterator[bytes]:
        """The SSE body: role chunk, deltas, finish chunk, usage chunk, ``[DONE]``.

        Frames of events that are already waiting are sent in one write (one
        syscall and one HTTP chunk instead of one per frame); nothing ever waits
        for a later event. An error after the first byte becomes one error frame
        before ``[DONE]``.
        """
        encoder = protocol.ChunkEncoder(self.id, self.created, self.model)
        keepalive = self.settings.sse_keepalive_seconds
        reply = _Reply()
        frames = [data_frame(encoder.role())]
        stop_watchdog = _call_later(
            self._deadline - time.monotonic() + DEADLINE_GRACE_SECONDS, self._past_deadline
        )
        try:
            if not self._ready():
                yield self._flush(frames)
            for event in self.events(keepalive):
                if event is KEEPALIVE:
                    frames.append(KEEPALIVE_FRAME)
                else:
                    reply.add(event)
                    if isinstance(event, TextDelta):
                        if event.text or event.logprobs is not None:
                            frames.append(data_frame(encoder.content(event.text, _logprobs(event))))
                    elif isinstance(event, ToolCallDelta):
                        frames.append(
                            data_frame(
                                encoder.tool_call(
                                    event.index, event.id, event.name, event.arguments
                                )
                            )
                        )
                    elif isinstance(event, RefusalDelta):
                        frames.append(data_frame(encoder.refusal(event.text, _logprobs(event))))
                    elif isinstance(event, ReplyInfo):
                        encoder.reply_info(event.service_tier, event.system_fingerprint)
                    elif isinstance(event, Finish):
                        break  # its frames go out with the deltas before it
                # A producer that keeps the queue full (real threads under gthread)
                # must not hold the client's bytes back: a batch has a size bound.
                if frames and (len(frames) >= MAX_BATCH_FRAMES or not self._ready()):
                    yield self._flush(frames)
            self._store_turn(reply, self._completion(reply))
            frames.append(data_frame(encoder.finish(reply.finish_reason)))
            if include_usage:
                frames.append(data_frame(encoder.usage(reply.usage_dict())))
            frames.append(DONE_FRAME)
            yield self._flush(frames)
        except ClientGone:
            self.record.outcome = "client_gone"
        except Exception as exc:
            # Headers are gone: whatever failed, the client gets an error frame.
            if not isinstance(exc, errors.APIError):
                log.exception("stream failed")
                exc = errors.APIError()
            self.record.outcome = f"error:{exc.code}"
            if frames:
                yield self._flush(frames)
            yield data_frame(protocol.dumps(exc.to_dict()))
            yield DONE_FRAME
        finally:
            stop_watchdog()
            if not self._finished and self.record.outcome == "ok":
                # The server closed the generator: the client went away mid-write.
                self.record.outcome = "client_gone"
            self.close()

    def _past_deadline(self) -> None:
        """The watchdog: the stream is still open past the run's deadline, so the
        server is stuck sending to a client that does not read. Cancel the run (the
        agent drops its upstream connection), give the lock back, and cut the client's
        connection, which ends the pending send."""
        if self._closed:
            return
        log.warning(
            "run on agent %s outlived its timeout of %g s; its client stopped reading",
            self.agent_config.id,
            self.agent_config.timeout_seconds,
        )
        self.record.outcome = "error:timeout"
        self.close()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def _ready(self) -> bool:
        """True when an event is already waiting (reading it will not block)."""
        return self._pending is not None or not self._queue.empty()

    def _flush(self, frames: list[bytes]) -> bytes:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        self.record.first_byte()
        return data

    def close(self) -> None:
        """Cancel the agent if it is still running; release the session lock and the
        idempotency claim."""
        if self._closed:
            return
        self._closed = True
        self._cancel.cancel()
        claimed, self._claimed = self._claimed, False
        if claimed and not self._finished and not self._write_unknown and self.idempotency:
            # Nothing was stored: the key is free at once. After a write with an
            # unknown outcome the claim stays until it expires: a write that Redis
            # still holds may land after a release sent later (a paused Redis serves
            # its queued connections in any order), and the key must not run twice.
            try:
                self.store.release_idempotency(self.idempotency.scope, self._owner)
            except Exception:
                log.warning("could not release an idempotency key; its claim will expire")
        if self._locked:
            self._locked = False
            try:
                self.store.release_lock(self.session_key, self._owner)
            except Exception:
                # The lock expires by itself; a failed release must not hide the reply.
                log.warning("could not release the lock of a session; it will expire")


class _Reply:
    """Accumulates the events of a run into the assistant message."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, t.Any]] = {}
        self.finish_reason = "stop"
        self.usage: Usage | None = None
        # Token log probabilities, merged over the pieces; None until some arrive.
        self.logprobs_content: list[dict[str, t.Any]] | None = None
        self.logprobs_refusal: list[dict[str, t.Any]] | None = None
        self.service_tier: str | None = None
        self.system_fingerprint: str | None = None
        self.refusal_parts: list[str] = []

    def add(self, event: t.Any) -> None:
        if isinstance(event, (TextDelta, RefusalDelta)):
            if isinstance(event, TextDelta):
                self.parts.append(event.text)
            else:
                self.refusal_parts.append(event.text)
            if event.logprobs is not None:
                if event.logprobs.content is not None:
                    if self.logprobs_content is None:
                        self.logprobs_content = []
                    self.logprobs_content.extend(event.logprobs.content)
                if event.logprobs.refusal is not None:
                    if self.logprobs_refusal is None:
                        self.logprobs_refusal = []
                    self.logprobs_refusal.extend(event.logprobs.refusal)
        elif isinstance(event, ReplyInfo):
            self.service_tier = event.service_tier
            self.system_fingerprint = event.system_fingerprint
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(
                event.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if event.id:
                call["id"] = event.id
            if event.name:
                call["function"]["name"] += event.name
            call["function"]["arguments"] += event.arguments
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
            self.usage = event.usage

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def content(self) -> str | None:
        """The message content: None for a reply made only of tool calls (OpenAI's shape)."""
        text = self.text
        return text if text or not self.calls else None

    @property
    def refusal(self) -> str | None:
        """The model's refusal, relayed to the client (not stored: the turn's content
        stays the text, empty for a refusal)."""
        return "".join(self.refusal_parts) or None

    @property
    def tool_calls(self) -> list[dict[str, t.Any]]:
        return [self.calls[index] for index in sorted(self.calls)]

    def usage_dict(self) -> dict[str, t.Any]:
        usage = self.usage or Usage()
        return protocol.usage_dict(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            usage.prompt_tokens_details,
            usage.completion_tokens_details,
        )

    def logprobs_dict(self) -> dict[str, t.Any] | None:
        if self.logprobs_content is None and self.logprobs_refusal is None:
            return None
        return protocol.logprobs_dict(self.logprobs_content, self.logprobs_refusal)


def _logprobs(event: TextDelta | RefusalDelta) -> dict[str, t.Any] | None:
    """The piece's ``logprobs`` for its chunk, as the backend sent them."""
    found = event.logprobs
    return None if found is None else protocol.logprobs_dict(found.content, found.refusal)


def _spawn(target: t.Callable[..., None], *args: t.Any) -> None:
    """Run ``target(*args)`` on its own: a bare greenlet under gevent's monkey-patching
    (gevent workers), else a daemon thread (gthread workers, tests).

    A patched ``threading.Thread`` is a greenlet too, wrapped in a Thread object with
    its own Event, Condition and locks, and ``start()`` switches to it and back before
    returning: ``spawn_raw`` costs a fraction of that, in time and memory per stream.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn_raw(target, *args)
        return
    threading.Thread(target=target, args=args, name="agent-run", daemon=True).start()


def _call_later(seconds: float, target: t.Callable[[], None]) -> t.Callable[[], None]:
    """Run ``target()`` on its own after ``seconds``; return a function that calls it off.

    Under gevent a bare loop timer spawns a bare greenlet when it fires (``target`` may
    do I/O, which the hub itself must not); else a daemon timer thread.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        timer = gevent.get_hub().loop.timer(max(seconds, 0.0))
        timer.start(gevent.spawn_raw, target)
        return timer.close
    thread = threading.Timer(max(seconds, 0.0), target)
    thread.daemon = True
    thread.start()
    return thread.cancel


def _store_call(method: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
    try:
        return method(*args, **kwargs)
    except StoreUnavailable as exc:
        log.warning("session store unavailable: %s", exc)
        raise errors.StoreUnavailable() from exc
    except StoreError as exc:
        log.error("session store error: %s", exc)
        raise errors.APIError("The session store could not save or read this turn.") from exc


def _api_error(exc: BaseException) -> errors.APIError:
    """Map what an agent raised to the error the client sees."""
    if isinstance(exc, errors.APIError):
        return exc
    if isinstance(exc, AgentRejected):
        return errors.UpstreamRejected(exc.status, exc.message, exc.type, exc.code, exc.param)
    if isinstance(exc, AgentUnavailable):
        return errors.AgentUnavailable(exc.message, exc.retry_after_seconds)
    if isinstance(exc, AgentTimeout):
        return errors.GatewayTimeout(exc.message)
    if isinstance(exc, AgentError):
        return errors.UpstreamFailed(exc.message)
    log.error("agent run raised an unexpected error", exc_info=exc)
    return errors.APIError()
