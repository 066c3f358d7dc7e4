"""The ``pi`` backend: the Pi coding agent in RPC mode (``pi --mode rpc``), kept warm.

Each worker keeps a small pool of pi processes (:mod:`.pool`), started on demand;
each runs isolated in a private directory: its own ``PI_CODING_AGENT_DIR`` (with a
``models.json`` for ``baseUrl`` and a ``settings.json`` that turns pi's own retries
and auto-compaction off, so one run is one upstream attempt ending in one
``agent_end``), its own ``HOME`` and working directory, ``PI_OFFLINE=1``, a minimal
environment, and no tools, extensions, skills or context files unless configured.

A run, on a process it has to itself:

1. The system prompt (the agent's, then the request's system texts) is written to
   the file pi was started with ``--system-prompt``, and the history goes into a
   fresh pi session file; ``switch_session`` loads both (pi re-reads the prompt file
   then; a few ms). So the gateway's store stays the source of truth, any warm
   process serves any session, and pi's memory of earlier runs (which keeps
   half turns after errors and aborts) never leaks into the next.
2. ``prompt`` sends the new turn, flattened as SPEC 9 says
   (:func:`~chatcompat.history.flatten_prompt`).
3. :class:`Started` once pi's upstream answered (the assistant ``message_start``)
   or at the first text; ``text_delta`` events become :class:`TextDelta` and
   ``thinking_delta`` events :class:`ReasoningDelta` (pi's thinking); the final
   assistant ``message_end`` gives the stop reason and the usage; ``agent_end``
   ends the run.

What goes wrong, and what the client sees::

    pi                                         raised here           client
    every process busy for queueTimeoutSeconds AgentUnavailable      503 agent_unavailable
    not found, exits or hangs while starting   AgentError            502 upstream_error
    refuses the prompt or the session switch   AgentError            502
    model call failed (stopReason "error":     AgentError            502 before the stream,
      refused, 4xx/5xx, dropped...)                                  else the error frame
    process died during the run                AgentError            502 / error frame
    client went away, or the run's time is up  nothing: the run ends (the run stopped)

On cancellation pi gets ``abort``; the process goes back to the pool once pi has
answered it (after its ``agent_end``), or is killed after ``ABORT_SECONDS``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import pathlib
import shutil
import tempfile
import threading
import typing as t

from ...history import flatten_prompt
from ...image_types import sniff
from ...messages import Message
from .. import image_fetch
from .. import url_policy
from ..api_keys import SendsAPIKey
from ..api_keys import read_api_key
from ..base import Agent
from ..base import AgentError
from ..base import AgentRejected
from ..base import AgentRequest
from ..base import Cancellation
from ..base import Event
from .pool import ProcessPool
from .process import PiProcess
from .turn import PiTurn
from .turn import session_file

if t.TYPE_CHECKING:
    from ...settings import AgentConfig

# `npm install --prefix .tools/pi ...` in a checkout (see README, "The pi backend").
LOCAL_PI = pathlib.Path(__file__).resolve().parents[2] / ".tools/pi/node_modules/.bin/pi"
COMMAND_SECONDS = 10.0  # switch_session takes a few ms
KEY_VARIABLE = "CHATCOMPAT_PI_API_KEY"  # baseUrl's key reaches pi through its environment
DEFAULT_PROVIDER = "chatcompat"
# The only variables of the gateway's environment pi gets unless passEnv names more.
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "NODE_EXTRA_CA_CERTS",
            "SSL_CERT_FILE", "SSL_CERT_DIR")  # fmt: skip
SETTINGS = {
    "retry": {"enabled": False, "provider": {"maxRetries": 0}},
    "compaction": {"enabled": False},
    "quietStartup": True,
    "enableInstallTelemetry": False,
}
# Plain chat upstreams: the system prompt as a system message, no reasoning_effort/store.
COMPAT = {"supportsDeveloperRole": False, "supportsReasoningEffort": False, "supportsStore": False}
ISOLATION_FLAGS = ["--no-session", "--no-extensions", "--no-skills", "--no-prompt-templates",
                   "--no-themes"]  # fmt: skip
_ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
# The prompt of a turn with images and no text (OpenClaw's words).
IMAGE_ONLY_PROMPT = "User sent image(s) with no text."


class PiAgent(SendsAPIKey, Agent):
    """An agent answered by pi processes (a pool per worker, see the module docstring)."""

    name = "pi"
    # pi takes images as bytes with the prompt (its RPC "images"); the gateway fetches
    # a URL's for it, under the guard of agents.image_fetch.
    accepts_images = True
    needs_image_bytes = True
    # pi takes one prompt per run, with no way to set sampling, token limits, client
    # tools or response formats per prompt; requests with them are refused. Only
    # tool_choice is taken, and ignored: without tools a client can only send "none"
    # or "auto" ("required" needs tools), and the gateway's Run enforces it anyway.
    request_fields: t.ClassVar[frozenset[str]] = frozenset({"tool_choice"})
    options_schema: t.ClassVar[dict[str, t.Any]] = {
        "type": "object",
        "properties": {
            "command": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
                "description": "pi command line before its options [default: pi on PATH,"
                " else the checkout's .tools/pi].",
            },
            "provider": {
                "type": "string",
                "minLength": 1,
                "description": "pi's --provider (with baseUrl: the name it gets) [chatcompat].",
            },
            "model": {"type": "string", "minLength": 1, "description": "pi's --model."},
            "baseUrl": {
                "type": "string",
                "pattern": "^https?://[^\\s]+$",
                "description": "An OpenAI-compatible API root pi calls (a models.json provider).",
            },
            "apiKey": {"type": "string", "minLength": 1, "description": "baseUrl's key."},
            "apiKeyEnv": {
                "type": "string",
                "pattern": _ENV_NAME,
                "description": "The gateway's variable that holds baseUrl's key.",
            },
            "modelsJson": {"type": "object", "description": "pi's models.json, as is."},
            # The older spelling; an agent's "models" list is the x-openclaw-model one.
            "models": {"type": "object", "description": "pi's models.json (old name)."},
            "cwd": {
                "type": "string",
                "minLength": 1,
                "description": "pi's working directory [a private empty one per process].",
            },
            "env": {
                "type": "object",
                "propertyNames": {"pattern": _ENV_NAME},
                "additionalProperties": {"type": "string"},
                "description": "Extra environment variables for pi.",
            },
            "passEnv": {
                "type": "array",
                "items": {"type": "string", "pattern": _ENV_NAME},
                "description": "Variables of the gateway's environment pi also gets.",
            },
            "tools": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "description": "pi tools to enable (--tools) [none].",
            },
            "contextFiles": {
                "type": "boolean",
                "default": False,
                "description": "Let pi read AGENTS.md/CLAUDE.md from its cwd and parents.",
            },
            "args": {
                "type": "array",
                "items": {"type": "string"},
                "description": "More pi options, after the isolation flags.",
            },
            "poolSize": {"type": "integer", "minimum": 1, "maximum": 64, "default": 2},
            "startTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "default": 30},
            "queueTimeoutSeconds": {"type": "number", "minimum": 0, "default": 30},
        },
        "dependentRequired": {
            "baseUrl": ["model"],
            "apiKey": ["baseUrl"],
            "apiKeyEnv": ["baseUrl"],
        },
        "additionalProperties": False,
    }

    @classmethod
    def check_model_choice(cls, options: t.Mapping[str, t.Any]) -> str | None:
        """pi runs a chosen model only next to its own ``--model`` (see _switch_model)."""
        if options.get("model") and (options.get("provider") or options.get("baseUrl")):
            return None
        return (
            "the pi backend runs a model chosen with x-openclaw-model only with 'model'"
            " and 'provider' (or 'baseUrl') set"
        )

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        options = config.options
        self._provider = options.get("provider") or (
            DEFAULT_PROVIDER if options.get("baseUrl") else None
        )
        self._model = options.get("model")
        self._queue_timeout = float(options.get("queueTimeoutSeconds", 30))
        self._pool: ProcessPool | None = None  # made on the first run, in the worker
        self._root: pathlib.Path | None = None
        self._lock = threading.Lock()

    # -- the run -----------------------------------------------------------------------

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        """Run one turn on a warm pi process (see the module docstring for errors).

        :raise AgentError: with :class:`~chatcompat.agents.base.AgentUnavailable`.
        """
        prompt = flatten_prompt(request.messages[request.history_count :])
        # Fetched before a process is taken: a refused URL costs no process.
        images = self._images(request, cancel)
        if images is None:
            return  # cancelled while fetching
        if not prompt.strip():
            if not images:
                raise AgentRejected(400, "This turn has no text and no image.", param="messages")
            prompt = IMAGE_ONLY_PROMPT
        pool = self._get_pool()
        process = pool.acquire(self._queue_timeout, cancel)
        if process is None:
            return  # the client left while the run waited for a process
        turn = PiTurn(process, cancel, self.config.id)
        cancel.on_cancel(turn.abort)
        session = process.home / "sessions" / f"run-{process.runs}.jsonl"
        finish = None
        try:
            (process.home / "system.md").write_text(request.system_prompt or "", "utf-8")
            session.write_text(
                session_file(
                    request.messages[: request.history_count],
                    process.cwd,
                    self._provider or "unknown",
                    self._model or "unknown",
                ),
                "utf-8",
            )
            process.discard_pending()
            process.call("switch_session", COMMAND_SECONDS, sessionPath=str(session))
            if request.model is not None:
                self._switch_model(process, request.model)
            turn.prepared = True
            finish = yield from turn.run(prompt, images)
        except OSError as exc:
            raise AgentError(f"The pi backend could not write its session file: {exc}") from exc
        finally:
            healthy = False
            try:
                healthy = turn.settle()
            finally:
                with contextlib.suppress(OSError):
                    session.unlink(missing_ok=True)
                pool.release(process, healthy)
        # Last, with the process already back in the pool: the gateway's Run ends (and
        # cancels, which must not reach a released process) once it has the Finish.
        if finish is not None:
            yield finish

    def _images(self, request: AgentRequest, cancel: Cancellation) -> list[Message] | None:
        """The new turn's images as pi's ``ImageContent``: a data URI's bytes as they
        were checked, a URL's fetched under the guard (:mod:`..image_fetch`) and checked
        like a data URI (type by its bytes, size); None when cancelled meanwhile.

        :raise AgentRejected: 400 naming the part: the fetch was refused or failed, or
            what it brought is no image the policy takes.
        """
        policy = self.config.images
        contents: list[Message] = []
        total = 0
        for image in request.images:
            data, mime_type = image.data, image.mime_type
            if image.url is not None:
                try:
                    data = image_fetch.fetch(
                        image.url,
                        max_bytes=policy.max_bytes,
                        max_redirects=policy.max_redirects,
                        timeout_seconds=policy.timeout_seconds,
                        allowlist=policy.url_allowlist,
                        address_allowed=self.image_address_allowed,
                        cancel=cancel,
                    ).data
                except image_fetch.FetchRefused as exc:
                    if cancel.is_set:
                        return None
                    raise AgentRejected(
                        400, str(exc), code="invalid_image_url", param=image.param
                    ) from None
                mime_type = sniff(data)
                if mime_type is None or mime_type not in policy.allowed_mimes:
                    what = f"an {mime_type} image" if mime_type else "no image of a known type"
                    raise AgentRejected(
                        400,
                        f"Invalid image: what the URL brought is {what}; this agent takes"
                        f" {', '.join(policy.allowed_mimes)} (images.allowedMimes).",
                        code="invalid_image",
                        param=image.param,
                    )
            if data is None or mime_type is None:
                continue  # not an image the policy check let through: nothing to send
            total += len(data)
            if total > policy.max_total_bytes:
                raise AgentRejected(
                    400,
                    f"Too many image bytes: at most {policy.max_total_bytes} bytes of images"
                    " per request (images.maxTotalBytes of this agent).",
                    code="invalid_image",
                    param=image.param,
                )
            encoded = base64.b64encode(data).decode("ascii")
            contents.append({"type": "image", "data": encoded, "mimeType": mime_type})
        return contents

    def image_address_allowed(self, address: url_policy.IPAddress) -> bool:
        """The image fetch's address check: public addresses only (a test subclass
        admits its loopback server; nothing else changes it)."""
        return url_policy.is_public_address(address)

    def _switch_model(self, process: PiProcess, model: str) -> None:
        """Run this turn on ``model`` (``x-openclaw-model``). pi's next switch_session
        goes back to its ``--model``, so the choice never outlives the run; without a
        ``--model`` it would stay pi's default in this process, hence refused.

        :raise AgentError: the agent has no provider and model, or pi does not know it.
        """
        if not (self._provider and self._model):
            raise AgentError(
                f"Agent {self.config.id!r} (pi) needs 'provider' and 'model' (or 'baseUrl')"
                " to run a model chosen with x-openclaw-model."
            )
        process.call("set_model", COMMAND_SECONDS, provider=self._provider, modelId=model)

    def close(self) -> None:
        """Stop every pi process of this agent in this worker; remove their directories."""
        with self._lock:
            pool, self._pool = self._pool, None
            root, self._root = self._root, None
        if pool is not None:
            pool.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def pool_stats(self) -> dict[str, t.Any]:
        """The pids of this worker's pi processes (all, idle), for tests and operators."""
        pool = self._pool
        return pool.stats() if pool is not None else {"pids": [], "idle": []}

    # -- processes ---------------------------------------------------------------------

    def _get_pool(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                options = self.config.options
                self._pool = ProcessPool(
                    self._new_process,
                    int(options.get("poolSize", 2)),
                    float(options.get("startTimeoutSeconds", 30)),
                    self.config.id,
                )
            return self._pool

    def _new_process(self, on_exit: t.Callable[[PiProcess], None]) -> PiProcess:
        """An unstarted process with its private directory written."""
        options = self.config.options
        command = self._command()
        environ = self._environment()
        try:
            with self._lock:
                if self._root is None:
                    self._root = pathlib.Path(
                        tempfile.mkdtemp(prefix=f"chatcompat-pi-{self.config.id}-")
                    )
                root = self._root
            home = pathlib.Path(tempfile.mkdtemp(prefix="process-", dir=root))
            agent_dir = home / "agent"
            agent_dir.mkdir()
            (home / "sessions").mkdir()
            (home / "system.md").write_text("", "utf-8")  # must exist: pi reads it as a file
            (agent_dir / "settings.json").write_text(json.dumps(SETTINGS), "utf-8")
            models = self._models_json()
            if models:
                (agent_dir / "models.json").write_text(json.dumps(models), "utf-8")
            cwd = options.get("cwd")
            if cwd is None:
                cwd = str(home / "cwd")
                os.mkdir(cwd)
        except OSError as exc:
            raise AgentError(f"The pi backend could not prepare its directory: {exc}") from exc
        if not os.path.isdir(cwd):
            raise AgentError(f"The cwd of agent {self.config.id!r} is not a directory: {cwd}")
        argv = [*command, "--mode", "rpc", *ISOLATION_FLAGS]
        if not options.get("contextFiles", False):
            argv.append("--no-context-files")
        tools = options.get("tools") or []
        argv += ["--tools", ",".join(tools)] if tools else ["--no-tools"]
        if self._provider:
            argv += ["--provider", self._provider]
        if self._model:
            argv += ["--model", self._model]
        argv += ["--system-prompt", str(home / "system.md"), *options.get("args", [])]
        environ.update(HOME=str(home), PI_CODING_AGENT_DIR=str(agent_dir), PI_OFFLINE="1")
        return PiProcess(argv, environ, cwd, home, on_exit)

    def _command(self) -> list[str]:
        command = list(self.config.options.get("command") or ["pi"])
        if command == ["pi"] and shutil.which("pi") is None:
            if not os.access(LOCAL_PI, os.X_OK):
                raise AgentError(
                    f"pi is not installed for agent {self.config.id!r}: it is not on PATH nor"
                    " in .tools/pi. Install it (README, 'The pi backend') or set 'command'."
                )
            command = [str(LOCAL_PI)]
        return command

    def _environment(self) -> dict[str, str]:
        options = self.config.options
        environ = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        environ.setdefault("PATH", os.defpath)
        for name in options.get("passEnv", []):
            if name in os.environ:
                environ[name] = os.environ[name]
        environ.update(options.get("env") or {})
        if options.get("baseUrl"):
            environ[KEY_VARIABLE] = (
                read_api_key(self.config.options, self.config.id) or "none"
            )  # pi wants a key, even for a local server
        return environ

    def _models_json(self) -> dict[str, t.Any]:
        options = self.config.options
        models = copy.deepcopy(dict(options.get("modelsJson") or options.get("models") or {}))
        if options.get("baseUrl"):
            providers = models.setdefault("providers", {})
            # pi's set_model takes only the models its registry lists: the ones a
            # request may choose with x-openclaw-model too.
            listed = dict.fromkeys([self._model, *self.config.models])
            providers[self._provider] = {
                "baseUrl": options["baseUrl"],
                "api": "openai-completions",
                "apiKey": KEY_VARIABLE,  # a variable name: pi reads its value
                "compat": COMPAT,
                # Images reach the model (pi would put a placeholder in their place
                # for a text-only model); an upstream without vision says so itself.
                "models": [{"id": model, "input": ["text", "image"]} for model in listed],
            }
        return models
