"""One agent run for one request, whatever the wire protocol.

A :class:`Run` takes the session lock (and first the request's ``Idempotency-Key``,
:meth:`Run.claim`, renewed like the lock), builds the agent's input, runs the agent,
which feeds a queue, and hands the events to a wire protocol
(:mod:`chatcompat.protocol`) through :meth:`Run.events`. For a stream the agent runs
on its own (a greenlet under gevent workers, a real thread under gthread workers):
reading the queue with a timeout is what lets keepalives flow while the agent is
silent, and what lets the gateway notice a client that went away and cancel the run.
A JSON client is sent nothing before the end, so an agent that stops at once when
cancelled runs in the request's own greenlet, and a timer does that watching
(:meth:`Run._run_whole`). The protocol hands the finished reply back to
:meth:`Run.finish`, which stores the turn (with the reply under the request's
``Idempotency-Key``, in the same write); :meth:`Run.close` then releases the lock.

A protocol streams a reply like this (the chat-completions one, in short)::

    run.watch()  # the stalled-client watchdog
    try:
        for event in run.events(keepalive):  # agent events and KEEPALIVE markers
            ...  # frames of the protocol
        run.finish(reply.message(), reply.usage, keyed_reply=...)
    except Exception as exc:
        error = run.stream_failed(exc)  # None: the client is gone
        ...  # the protocol's error frame
    finally:
        run.end_stream()
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
import time
import typing as t
import uuid

from . import errors
from . import history
from . import images
from .agents.base import AgentRequest
from .agents.base import Cancellation
from .agents.base import Event
from .agents.base import Finish
from .agents.base import InputImage
from .agents.base import Started
from .background import call_later
from .background import spawn
from .client_socket import peer_closed
from .lease import Lease
from .messages import Message
from .reply_rules import ReplyRules
from .sessions.base import KeyedReply
from .sessions.base import StoreError
from .sessions.base import StoreUnreachable

if t.TYPE_CHECKING:
    from .agents.base import Agent
    from .agents.base import Usage
    from .idempotency import Idempotency
    from .principal import Principal
    from .requestlog import RequestRecord
    from .sessions.base import IdempotencyRecord
    from .sessions.base import SessionStore
    from .sessions.base import StoredResponse
    from .settings import AgentConfig
    from .settings import Settings

log = logging.getLogger(__name__)


# How often a waiting response checks that its client is still there.
DISCONNECT_POLL_SECONDS = 0.5
# A stream whose client stopped reading holds the server in a send, where the event
# pump cannot look at the deadline: a watchdog ends the run this long after it.
DEADLINE_GRACE_SECONDS = 1.0
# A turn write that failed may have landed all the same (Redis ran it, the reply was
# lost): it is sent again, with the same turn id, so it lands at most once.
TURN_WRITE_ATTEMPTS = 3
TURN_WRITE_PAUSE_SECONDS = 0.2
QUEUE_SIZE = 256


class _End:
    """The agent generator returned."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Keepalive:
    """Nothing happened for a keepalive interval."""


@dataclasses.dataclass(frozen=True)
class Continuation:
    """Where a Responses request's ``previous_response_id`` points (SPEC 15).

    Continuing the latest response of a session runs on that session (``fork`` False:
    the run's session key is ``source_key``, and the response must still be the latest
    once the lock is held). Continuing an earlier one forks (``fork`` True): the run's
    session is a new one, whose history is the first ``position`` messages of
    ``source_key``, stored with the new turn as the fork's first turn.
    """

    response_id: str
    source_key: str
    position: int
    fork: bool


KEEPALIVE = Keepalive()


class Run:
    """One agent run for one request: :meth:`claim`, :meth:`start`, :meth:`events` up to
    :meth:`finish`, and :meth:`close` in every case.

    :param model: the model the client asked for, as replies name it.
    :param model_override: the upstream model the agent runs this time
        (``x-openclaw-model``, already allowed by routing); None: the agent's own.
    :param client_socket: the client's connection, looked at to notice it closed.
    :param owner: the principal the run is for; stored responses remember it.
    :param store_turn: False for a request that must leave nothing stored (the
        Responses API's ``store: false``): the run reads its session but writes nothing.
    :param stream: False when the client takes the reply whole (the agent is told, see
        :attr:`AgentRequest.stream`).
    """

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
        owner: str = "operator",
        store_turn: bool = True,
        model_override: str | None = None,
        principal: Principal | None = None,
        stream: bool = True,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.store = store
        self.agent = agent
        self.agent_config = agent_config
        self.session_key = session_key
        self.sticky = sticky
        self.model = model
        self.record = record
        self.idempotency = idempotency
        self.owner = owner
        self.store_turn = store_turn
        self.model_override = model_override
        self._socket = client_socket
        self.principal = principal
        runs = None if principal is None else principal.limits.concurrent_runs
        slot = None if principal is None or runs is None else (principal.id, runs)
        self._lease = Lease(store, session_key, idempotency, slot)
        self._turn_id = uuid.uuid4().hex
        self._write_unknown = False  # a turn write whose outcome nobody knows
        self._closed = False
        self._finished = False
        self._cancel = Cancellation()
        # A JSON reply of an agent that stops at once runs in the request's greenlet
        # (_run_whole): its queue is read once the agent has returned, and holds it all.
        self._inline = not stream and agent.stops_at_once
        self._queue: queue.Queue[Event | _End | _Failed] = (
            queue.Queue() if self._inline else queue.Queue(QUEUE_SIZE)
        )
        self._deadline = 0.0
        self._peer_check_at = 0.0
        self._pending: Event | None = None  # an event read early by start()
        self._turn_to_store: list[Message] = []
        self._stop_watchdog: t.Callable[[], None] | None = None
        self._produced = False  # a JSON run's agent returned (_run_whole)
        self._renewing = False  # a lease renewal of _run_whole's is under way
        # Held by a renewal of _run_whole's, and when the agent returns: no renewal
        # of the lease may still be under way once the run goes on to release it.
        self._whole_lock = threading.Lock()
        self._storing = False
        self._rules = ReplyRules(None)  # start() sets the request's
        #: When the request was accepted (Unix seconds), as replies report it.
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
        return self._lease.claim()

    def start(
        self,
        conversation: history.Conversation,
        params: dict[str, t.Any],
        continuation: Continuation | None = None,
        new_images: t.Sequence[InputImage] = (),
    ) -> None:
        """Lock the session, build the input, start the agent and wait until it has
        accepted the run (a JSON run in the request's greenlet: until it has ended).
        Errors up to here are plain HTTP errors.

        :param continuation: where the request's ``previous_response_id`` points.
        :param new_images: the new turn's images as :func:`chatcompat.images.check_images`
            accepted them (a backend that needs bytes gets them).
        :raise errors.APIError: 404/409/5xx before anything was sent (a 400 from a
            backend that refused what an image URL brought).
        """
        system_text, earlier, new_turn = conversation
        self._rules = ReplyRules(
            params.get("tool_choice"), relay_reasoning=self.agent_config.reasoning == "relay"
        )
        timeout = self.agent_config.timeout_seconds
        limit = self.agent_config.history_limit
        if limit is None:
            limit = self.settings.history_limit
        # A key generated for this request is known to nobody else yet: no lock to
        # take and no history to read (half the store work of a stateless request).
        try:
            # A named key's run slot (SPEC 16.1: after the session, before the run).
            self._lease.take_slot()
            fork_base: list[Message] | None = None
            stored: list[Message] | None
            if continuation is not None and continuation.fork:
                # A new session (its key is fresh): no lock; the source is only read.
                fork_base = self._fork_base(continuation)
                stored = fork_base[-limit:] if limit > 0 else []
            elif self.sticky:
                lock_wait = self.settings.lock_timeout_seconds
                self._lease.lock(timeout if lock_wait is None else lock_wait, self._waiting)
                with errors.map_store_errors():
                    stored = self.store.load_history(self.session_key, limit)
                if continuation is not None:
                    self._check_still_latest(continuation)
            else:
                # The turn must be storable before an agent spends anything on it.
                with errors.map_store_errors():
                    self.store.ping()
                stored = None
            past = history.choose_history(stored, earlier, limit)
            # A new session keeps what the agent saw as its first turn, so the next
            # request (which sends only the key) continues the same conversation.
            self._turn_to_store = (past if stored is None else []) + new_turn
            # Earlier turns' images: a short marker unless images.history is "keep";
            # always for a backend that takes images as bytes (its history is text).
            # Not the current user turn's: a new turn of tool results continues it.
            needs_bytes = self.agent.needs_image_bytes
            shown = images.mark_earlier_images(
                past, self.agent_config.images, always=needs_bytes, new_turn=new_turn
            )
            if fork_base is not None:
                self._turn_to_store = fork_base + new_turn
            sent = shown + new_turn
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
                images=tuple(new_images) if needs_bytes else (),
                model=self.model_override,
                stream=self.stream,
            )
            self._deadline = time.monotonic() + timeout
            if self._inline:
                self._run_whole(request)
            else:
                spawn(self._produce, request)
            first = self._next(keepalive=None)
            if not isinstance(first, Started):
                self._pending = first
        except BaseException:
            self.close()
            raise

    def _fork_base(self, continuation: Continuation) -> list[Message]:
        """The forked session's history: the source's first ``position`` messages.

        :raise errors.PreviousResponseNotFound: the source session expired meanwhile.
        """
        with errors.map_store_errors():
            base = self.store.load_history(
                continuation.source_key, continuation.position, upto=continuation.position
            )
        if base is None:
            raise errors.PreviousResponseNotFound(
                f"Previous response with id {continuation.response_id!r} not found.",
                param="previous_response_id",
            )
        return base

    def _check_still_latest(self, continuation: Continuation) -> None:
        """Under the session lock: the response is still the session's latest turn, so
        the new turn follows it (another request may have continued it meanwhile).

        :raise errors.PreviousResponseNotFound: it was deleted or expired meanwhile.
        :raise errors.ResponseContinued: a turn was stored after it meanwhile.
        """
        with errors.map_store_errors():
            record = self.store.get_response(continuation.response_id)
        if record is None or record.session_key != self.session_key:
            raise errors.PreviousResponseNotFound(
                f"Previous response with id {continuation.response_id!r} not found.",
                param="previous_response_id",
            )
        if not record.latest:
            raise errors.ResponseContinued(param="previous_response_id")

    def _waiting(self, now: float) -> None:
        if now >= self._peer_check_at:
            self._check_client(now)

    def _produce(self, request: AgentRequest, *, inline: bool = False) -> None:
        """Run the agent and feed the queue: on its own greenlet/thread, or ``inline``
        in the request's (:meth:`_run_whole`)."""
        events = None
        try:
            events = self.agent.run(request, self._cancel)
            for event in events:
                if not self._put(event):
                    return
            self._put(_End())
        except BaseException as exc:  # everything goes to the response side...
            if inline and not isinstance(exc, Exception):
                raise  # ...but a kill of the request's own greenlet (GreenletExit)
            self._put(_Failed(exc))
        finally:
            if events is not None and hasattr(events, "close"):
                try:
                    events.close()
                except Exception:
                    log.exception("agent %s failed to close its run", self.agent_config.id)

    def _run_whole(self, request: AgentRequest) -> None:
        """Run the agent of a JSON client's request here, to its end (an agent that
        :attr:`~chatcompat.agents.base.Agent.stops_at_once`).

        Saves the greenlet or thread of a stream's run and the hand-over of each
        event (7 % of a JSON request's CPU at c=64, 13 % at c=1, when measured). What
        :meth:`_next` does between a stream's events, a timer does meanwhile
        (:meth:`_check_whole`): the client gone or the deadline passed cancels the
        run (the agent drops its upstream connection at once), and the lease is
        renewed. The events then come from the queue as a stream's would, and
        :meth:`_next` says why a cancelled run ended.
        """
        now = time.monotonic()
        self._check_client(now)  # a client already gone: no agent runs for it
        self._stop_watchdog = call_later(self._check_in(now), self._check_whole)
        try:
            self._produce(request, inline=True)
        finally:
            with self._whole_lock:
                self._produced = True
            self._unwatch()

    def _check_in(self, now: float) -> float:
        return max(min(DISCONNECT_POLL_SECONDS, self._deadline - now), 0.0)

    def _check_whole(self) -> None:
        """The timer of :meth:`_run_whole` (a greenlet, or the timer thread)."""
        if self._produced:
            return  # the agent returned meanwhile
        now = time.monotonic()
        if now >= self._deadline or (self._socket is not None and peer_closed(self._socket)):
            self._cancel.cancel()
            return
        if now >= self._lease.renew_at and not self._renewing:
            # On its own: the store may be slow, and the timer thread (gthread
            # workers) serves every run's timers.
            self._renewing = True
            spawn(self._renew_whole)
        self._stop_watchdog = call_later(self._check_in(now), self._check_whole)

    def _renew_whole(self) -> None:
        # Under the lock _run_whole takes when the agent returns: no renewal is still
        # under way once the run goes on to release the lease.
        with self._whole_lock:
            try:
                if not self._produced:
                    self._lease.renew()
            finally:
                self._renewing = False

    def _check_client(self, now: float) -> None:
        """Cancel the run when the client has closed its connection.

        Checked on a timer, whether or not the agent is producing: a chatty agent
        must not keep an abandoned run going until its end.

        :raise errors.ClientGone: the client is gone (the run is cancelled).
        """
        self._peer_check_at = now + DISCONNECT_POLL_SECONDS
        if self._socket is not None and peer_closed(self._socket):
            self._cancel.cancel()
            raise errors.ClientGone()

    def _put(self, item: Event | _End | _Failed) -> bool:
        while not self._cancel.is_set:
            try:
                self._queue.put(item, timeout=DISCONNECT_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    # -- reading events ----------------------------------------------------------

    @t.overload
    def _next(self, keepalive: None) -> Event: ...
    @t.overload
    def _next(self, keepalive: float) -> Event | Keepalive: ...
    def _next(self, keepalive: float | None) -> Event | Keepalive:
        """The next agent event, or KEEPALIVE after ``keepalive`` silent seconds.

        :raise errors.ClientGone: the client closed the connection (the run is cancelled).
        :raise errors.APIError: the agent failed or ran out of time.
        """
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        keepalive_at = None if keepalive is None else time.monotonic() + keepalive
        while True:
            now = time.monotonic()
            # Checked before reading: a producer that keeps the queue full must not
            # run past the agent's timeout.
            if now >= self._deadline:
                self._time_out()
            if now >= self._peer_check_at:
                self._check_client(now)
            if now >= self._lease.renew_at:
                self._lease.renew()
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
                raise errors.from_agent_error(item.exc)
            if isinstance(item, _End):
                raise errors.UpstreamFailed("The agent ended without finishing its reply.")
            return item

    def _time_out(self) -> t.NoReturn:
        self._cancel.cancel()
        raise errors.GatewayTimeout(
            f"The agent did not finish within {self.agent_config.timeout_seconds:g} s."
        )

    @t.overload
    def events(self, keepalive: None = None) -> t.Iterator[Event]: ...
    @t.overload
    def events(self, keepalive: float) -> t.Iterator[Event | Keepalive]: ...
    def events(self, keepalive: float | None = None) -> t.Iterator[Event | Keepalive]:
        """Agent events up to and including :class:`Finish`, with KEEPALIVE markers, as
        the request's rules let them through (:mod:`chatcompat.reply_rules`).

        :raise errors.ToolChoiceNotSatisfied: the reply did not call the tool the
            request's ``tool_choice`` demands (at its end; nothing is stored).
        """
        while True:
            item = self._next(keepalive)
            if isinstance(item, Started):
                continue
            if isinstance(item, Keepalive):
                yield item
                continue
            for event in (item,) if self._rules.passive else self._rules.take(item):
                yield event
                if isinstance(event, Finish):
                    return

    def ready(self) -> bool:
        """True when an event is already waiting (reading it will not block): a
        protocol sends what it has when the next event would make it wait."""
        return self._pending is not None or not self._queue.empty()

    # -- finishing ---------------------------------------------------------------

    @property
    def keyed(self) -> bool:
        """The request has an Idempotency-Key: :meth:`finish` needs the reply as sent."""
        return self.idempotency is not None

    def finish(
        self,
        message: Message,
        usage: Usage | None,
        keyed_reply: dict[str, t.Any] | None = None,
        response: StoredResponse | None = None,
    ) -> None:
        """Store the finished turn (the run's only write of it) and record its usage.

        :param message: the assistant message (:meth:`~chatcompat.protocol.reply.Reply.message`).
        :param keyed_reply: the reply as the client got it, stored in the same write under
            the request's Idempotency-Key to be replayed; required when :attr:`keyed`.
        :param response: the Responses API response, stored in the same write.
        :raise errors.ClientGone: the client left before the end (nothing is stored).
        :raise errors.TurnMayNotBeStored: the write's outcome is unknown.
        :raise errors.APIError: the store refused the turn (nothing stored).
        """
        # Spent whether or not the turn is stored: counted first.
        self._count_tokens(usage)
        # A client that left before the end gets nothing stored (SPEC 8: no half turns).
        self._check_client(time.monotonic())
        ttl = (
            self.settings.session_ttl_seconds
            if self.sticky
            else self.settings.stateless_ttl_seconds
        )
        keyed = None
        if self.idempotency is not None:
            if keyed_reply is None:
                raise ValueError("a run with an Idempotency-Key stores its reply")
            keyed = KeyedReply(self.idempotency.scope, self.idempotency.fingerprint, keyed_reply)
        if self.store_turn:
            self._storing = True  # the watchdog leaves a write in progress alone
            try:
                self._write_turn([*self._turn_to_store, message], ttl, keyed, response)
            finally:
                self._storing = False
        self._finished = True
        self.record.set_usage(usage)

    def _count_tokens(self, usage: Usage | None) -> None:
        """Add the run's ``total_tokens`` to its key's window (a key with a token
        limit only). A failure is logged: the reply is not held back for a count."""
        if self.principal is None or usage is None or not usage.total_tokens:
            return
        if self.principal.limits.tokens_per_minute is None:
            return
        try:
            self.store.record_tokens(self.principal.id, usage.total_tokens)
        except StoreError as exc:
            log.warning("could not count the tokens of key %s: %s", self.principal.id, exc)

    def _write_turn(
        self,
        messages: list[Message],
        ttl: float,
        keyed: KeyedReply | None,
        response: StoredResponse | None,
    ) -> None:
        """Append the turn, sending it again while the outcome is unknown.

        :raise errors.TurnMayNotBeStored: no attempt was confirmed, and one may have
            landed (a Redis that ran the command and lost the reply).
        :raise errors.APIError: the store refused the turn (nothing stored).
        """
        try:
            for attempt in range(1, TURN_WRITE_ATTEMPTS + 1):
                # After a first attempt, any failure may hide an earlier write that landed.
                with errors.map_store_errors(unknown_outcome=attempt > 1, keyed=keyed is not None):
                    try:
                        stored = self.store.append_turn(
                            self.session_key,
                            self.agent_config.id,
                            messages,
                            sticky=self.sticky,
                            ttl_seconds=ttl,
                            turn_id=self._turn_id,
                            keyed_reply=keyed,
                            response=response,
                        )
                    except StoreUnreachable as exc:
                        if attempt == TURN_WRITE_ATTEMPTS:
                            raise  # the last attempt: "may not have been stored"
                        log.warning("session store unavailable while storing a turn: %s", exc)
                        time.sleep(TURN_WRITE_PAUSE_SECONDS * attempt)  # cooperative (gevent)
                        continue
                if not stored and attempt == 1:
                    # Not a resend of ours: the key's request finished in another run
                    # (our claim had expired), which stored its own turn and reply.
                    log.warning("a request with this idempotency key was stored by another run")
                return
        except errors.TurnMayNotBeStored:
            self._write_unknown = True
            raise

    # -- streaming -----------------------------------------------------------------

    def watch(self) -> None:
        """Start the watchdog of a streamed reply (:meth:`close` stops it).

        A stream whose client stopped reading holds the server in a send, where
        :meth:`events` cannot look at the deadline: the watchdog ends the run
        :data:`DEADLINE_GRACE_SECONDS` after it.
        """
        self._stop_watchdog = call_later(
            self._deadline - time.monotonic() + DEADLINE_GRACE_SECONDS, self._past_deadline
        )

    def stream_failed(self, exc: Exception) -> errors.APIError | None:
        """The error a stream whose headers are gone ends with, recorded as the
        request's outcome; None when the client is gone (nothing more to send).

        :param exc: what :meth:`events` or :meth:`finish` raised, or a bug (logged, 500).
        """
        if isinstance(exc, errors.ClientGone):
            self.record.outcome = "client_gone"
            return None
        if not isinstance(exc, errors.APIError):
            log.error("stream failed", exc_info=exc)
            exc = errors.APIError()
        self.record.outcome = f"error:{exc.code}"
        return exc

    def end_stream(self) -> None:
        """The stream's body ended, or the server closed it: :meth:`close` the run."""
        self._unwatch()
        if not self._finished and self.record.outcome == "ok":
            # The server closed the generator: the client went away mid-write.
            self.record.outcome = "client_gone"
        self.close()

    def _unwatch(self) -> None:
        stop, self._stop_watchdog = self._stop_watchdog, None
        if stop is not None:
            stop()

    def _past_deadline(self) -> None:
        """The watchdog: the stream is still open past the run's deadline, so the
        server is stuck sending to a client that does not read. Cancel the run (the
        agent drops its upstream connection), give the lock back, and cut the client's
        connection, which ends the pending send."""
        if self._closed:
            return
        if self._storing:
            # Not stuck sending: writing the turn, whose store calls have their own
            # timeouts. Releasing the lock or the claim under that write would let
            # another turn, or a repeat of this request, run before it lands.
            self._stop_watchdog = call_later(DEADLINE_GRACE_SECONDS, self._past_deadline)
            return
        log.warning(
            "run on agent %s outlived its timeout of %g s; its client stopped reading",
            self.agent_config.id,
            self.agent_config.timeout_seconds,
        )
        if not self._finished:
            self.record.outcome = "error:timeout"
        self.close()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def close(self) -> None:
        """Cancel the agent if it is still running; stop the watchdog; release the
        session lock and the idempotency claim."""
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        self._cancel.cancel()
        # Nothing was stored: the key is free at once. After a write with an unknown
        # outcome the claim stays until it expires: a write that Redis still holds may
        # land after a release sent later (a paused Redis serves its queued connections
        # in any order), and the key must not run twice.
        self._lease.release(keep_claim=(self._finished and self.store_turn) or self._write_unknown)
