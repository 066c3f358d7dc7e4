"""The ``chatcompat`` command: init, serve, check, sessions, keys."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import secrets
import sys
import typing as t

import json5

from . import config_edit
from .config import ConfigError
from .config import find_config_file
from .config import load_document
from .config import load_settings
from .config import settings_from_document
from .config import state_dir
from .config import without_credentials
from .principal import session_key_owner
from .settings import SCOPES
from .settings import Settings

CONFIG_TEMPLATE = """\
// chatcompat configuration (JSON5: comments and trailing commas are fine).
// Reference: the "Configuration" section of chatcompat's README.
{{
  gateway: {{
    bind: "127.0.0.1",
    port: {port},
    auth: {{
      mode: "token",
      token: "{token}",
    }},
    http: {{
      endpoints: {{
        chatCompletions: {{ enabled: true }},
        responses: {{ enabled: true }},
      }},
    }},
  }},
  agents: {{
    list: [
{agents}
    ],
  }},
}}
"""

ECHO_AGENT = '      {{ id: "main", default: true, backend: "echo" }},'
UPSTREAM_AGENT = """\
      {{
        id: "main",
        default: true,
        backend: "openai", // any OpenAI-compatible server (README: "The openai backend")
        baseUrl: {url},
        model: {model}, // the upstream's model name
{key}      }},"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chatcompat`` console script."""
    # Like `python -m gunicorn`: backends given by dotted path may live in the
    # current directory (gunicorn itself imports the app from there too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcompat",
        description="OpenAI-compatible /v1/chat/completions gateway in front of agents.",
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    init = commands.add_parser("init", help="write a config with a fresh token")
    init.add_argument("--path", help="where to write [$CHATCOMPAT_STATE_DIR/chatcompat.json5]")
    init.add_argument("--port", type=int, default=18789)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument(
        "--upstream",
        metavar="URL",
        help="back agent main with this OpenAI-compatible API root instead of echo"
        " (e.g. http://127.0.0.1:11434/v1)",
    )
    init.add_argument("--model", help="the upstream's model name (with --upstream)")
    init.add_argument(
        "--api-key-env", metavar="VAR", help="the variable holding the upstream's API key"
    )
    init.set_defaults(handler=cmd_init)

    serve = commands.add_parser("serve", help="run the gateway under gunicorn (gevent)")
    serve.add_argument("--config", help="config file (else the usual discovery)")
    serve.add_argument("--bind", help="HOST:PORT, overrides gateway.bind/gateway.port")
    serve.add_argument("--workers", type=int, help="worker processes [CPU count]")
    serve.add_argument(
        "--worker-class", choices=("gevent", "gthread"), help="gunicorn worker [gevent]"
    )
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check", help="validate the config and exit")
    check.add_argument("--config", help="config file (else the usual discovery)")
    check.set_defaults(handler=cmd_check)

    sessions = commands.add_parser("sessions", help="inspect stored sessions")
    sessions.add_argument("--config", help="config file (else the usual discovery)")
    actions = sessions.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="live sessions, newest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=cmd_sessions_list)
    show = actions.add_parser("show", help="one session's transcript as JSON")
    show.add_argument("key")
    show.set_defaults(handler=cmd_sessions_show)
    delete = actions.add_parser("delete", help="delete one session")
    delete.add_argument("key")
    delete.set_defaults(handler=cmd_sessions_delete)

    keys = commands.add_parser("keys", help="named API keys (gateway.auth.keys)")
    keys.add_argument("--config", help="config file (else the usual discovery)")
    key_actions = keys.add_subparsers(metavar="ACTION")
    add = key_actions.add_parser(
        "add", help="make a key: prints its token once, writes its SHA-256 into the config"
    )
    add.add_argument("id", help="the key's name ([a-z0-9][a-z0-9_-]{0,63})")
    add.add_argument("--agents", help="comma-separated agent ids it may use [all]")
    add.add_argument(
        "--scopes", help=f"comma-separated, of {', '.join(SCOPES)} [chat,responses,models]"
    )
    add.add_argument("--requests-per-minute", type=int, metavar="N")
    add.add_argument("--tokens-per-minute", type=int, metavar="N")
    add.add_argument("--concurrent-runs", type=int, metavar="N")
    add.set_defaults(handler=cmd_keys_add)
    key_list = key_actions.add_parser("list", help="the configured keys (never a token)")
    key_list.set_defaults(handler=cmd_keys_list)
    return parser


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"chatcompat: config: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_init(args: argparse.Namespace) -> int:
    path = args.path or os.path.join(state_dir(os.environ), "chatcompat.json5")
    if os.path.exists(path) and not args.force:
        print(f"Keeping the existing config {path} (--force writes a new one).")
        settings = _settings(path)
        _print_usage(settings, path)
        return 0
    token = secrets.token_urlsafe(32)
    agents = _init_agent(args)
    if agents is None:
        return 2
    text = CONFIG_TEMPLATE.format(port=args.port, token=token, agents=agents)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    # The file holds the token: readable by its owner only, from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"Wrote {path}")
    settings = _settings(path)
    if args.upstream:
        print(f"Agent main answers with {args.model!r} at {args.upstream.rstrip('/')}.")
        if args.api_key_env and not os.environ.get(args.api_key_env):
            print(f"Set {args.api_key_env} (the upstream's API key) before chatcompat serve.")
    _print_usage(settings, path)
    return 0


def _init_agent(args: argparse.Namespace) -> str | None:
    """The agents.list entry ``init`` writes; None (after saying why) when the options
    do not make a valid agent."""
    if not args.upstream:
        if args.model or args.api_key_env:
            print("chatcompat: --model and --api-key-env go with --upstream", file=sys.stderr)
            return None
        return ECHO_AGENT.format()
    if not args.model:
        print("chatcompat: --upstream needs --model (the upstream's model name)", file=sys.stderr)
        return None
    key = f"        apiKeyEnv: {json.dumps(args.api_key_env)},\n" if args.api_key_env else ""
    entry = UPSTREAM_AGENT.format(
        url=json.dumps(args.upstream.rstrip("/")), model=json.dumps(args.model), key=key
    )
    # Checked as the file will be, before anything is written.
    document = {"agents": {"list": [json5.loads(entry.strip().rstrip(","))]}}
    try:
        settings_from_document(document, environ={"CHATCOMPAT_GATEWAY_TOKEN": "x"})
    except ConfigError as exc:
        flags = {"baseUrl": "--upstream", "model": "--model", "apiKeyEnv": "--api-key-env"}
        for problem in exc.problems:
            for option, flag in flags.items():
                problem = problem.replace(f"agents.list[0].{option}:", f"{flag}:")
            print(f"chatcompat: {problem}", file=sys.stderr)
        return None
    return entry


def _print_usage(settings: Settings, path: str) -> None:
    base = f"http://{settings.bind}:{settings.port}/v1"
    url = f"{base}/chat/completions"
    auth = f"-H 'Authorization: Bearer {settings.auth_secret}' " if settings.auth_secret else ""
    print(
        f"""
Start the gateway:
  chatcompat serve --config {path}

Then call it:
  curl -sS {url} {auth}-H 'Content-Type: application/json' -H 'x-openclaw-agent-id: main' \\
    -d '{{"model": "openclaw", "messages": [{{"role": "user", "content": "hi"}}]}}'

  curl -N {url} {auth}-H 'Content-Type: application/json' -H 'x-openclaw-agent-id: main' \\
    -d '{{"model": "openclaw", "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}'

The Responses API:
  curl -sS {base}/responses {auth}-H 'Content-Type: application/json' \\
    -d '{{"model": "openclaw", "input": "hi"}}'
"""
    )


def cmd_serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.config:
        env["CHATCOMPAT_CONFIG"] = os.path.abspath(args.config)
    if args.bind:
        env["CHATCOMPAT_BIND"] = args.bind
    if args.workers:
        env["CHATCOMPAT_WORKERS"] = str(args.workers)
    if args.worker_class:
        env["CHATCOMPAT_WORKER_CLASS"] = args.worker_class
    # Fail here, with every problem listed, rather than in each worker.
    try:
        load_settings(None, env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"chatcompat: config: {problem}", file=sys.stderr)
        return 2
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:chatcompat.gunicorn_config",
        "chatcompat:create_app()",
    ]
    # exec: gunicorn becomes this process, so signals reach its master directly.
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover - execve does not return


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    source = settings.config_path or "no config file (built-in defaults)"
    endpoint = "enabled" if settings.chat_completions_enabled else "DISABLED"
    print(f"ok: {source}")
    print(f"  listen      {settings.bind}:{settings.port}, auth {settings.auth_mode}")
    print(f"  endpoint    /v1/chat/completions {endpoint}")
    print(f"  agents      {', '.join(f'{a.id} ({a.backend})' for a in settings.agents)}")
    print(f"  default     {settings.default_agent_id}")
    if settings.api_keys:  # named keys (never a token; `keys list` shows more)
        print(f"  keys        {', '.join(key.id for key in settings.api_keys)}")
    print(f"  sessions    {_shown_store(settings.session_store)}")
    return _check_primary(settings)


def _shown_store(url: str) -> str:
    """The store URL without its password nor a secret query option's value."""
    from .settings import StoreURL
    from .settings import StoreURLError

    shown = without_credentials(url)
    try:
        secrets = StoreURL.parse(url).secrets
    except StoreURLError:
        return shown
    for secret in sorted(secrets, key=len, reverse=True):
        shown = shown.replace(secret, "<redacted>")
    return shown


def _check_primary(settings: Settings) -> int:
    """Behind Redis Sentinel, ask the sentinels which primary is in use (the only
    part of ``check`` that connects: the primary moves, so the file cannot say).

    :return: 1 when no primary answers, else 0.
    """
    from .sessions import StoreError
    from .sessions.redis_store import RedisStore
    from .settings import StoreURL

    if not StoreURL.parse(settings.session_store).sentinels:
        return 0
    store = RedisStore(settings.session_store, redis_options=settings.redis)
    try:
        primary = store.ping()
        replicas = store.min_replicas()
    except StoreError as exc:  # its message has no password (the store's rule)
        print(f"chatcompat: sessions.store: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"  primary     {primary} (from the sentinels; {replicas} replica(s) confirm each turn)")
    return 0


def _store(args: argparse.Namespace) -> t.Any:
    from .sessions import open_store

    return open_store(_settings(args.config).session_store)


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def cmd_sessions_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        sessions = store.list_sessions(args.limit)
    if not sessions:
        print("no sessions")
        return 0
    header = f"{'KEY':<60} {'AGENT':<12} {'OWNER':<16} {'TURNS':>5}"
    print(f"{header} {'UPDATED':<19} {'EXPIRES':<19}")
    for info in sessions:
        owner = session_key_owner(info.key) or "operator"
        print(
            f"{info.key:<60} {info.agent_id:<12} {owner:<16} {info.turns:>5} "
            f"{_when(info.updated):<19} {_when(info.expires):<19}"
        )
    return 0


def cmd_sessions_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        info = store.get_session(args.key)
        if info is None:
            print(f"no session {args.key!r}", file=sys.stderr)
            return 1
        turns = store.transcript(args.key)
        responses = store.response_ids(args.key)
    document = {
        "key": info.key,
        "agent": info.agent_id,
        "owner": session_key_owner(info.key) or "operator",
        "sticky": info.sticky,
        "created": _when(info.created),
        "updated": _when(info.updated),
        "expires": _when(info.expires),
        "turns": [{"created": _when(turn.created), "messages": turn.messages} for turn in turns],
        "responses": responses,  # ids of the stored Responses API responses, oldest first
    }
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def cmd_sessions_delete(args: argparse.Namespace) -> int:
    with _store(args) as store:
        existed = store.delete_session(args.key)
    if not existed:
        print(f"no session {args.key!r}", file=sys.stderr)
        return 1
    print(f"deleted {args.key}")
    return 0


# -- keys ----------------------------------------------------------------------------

KEYS_PATH = ("gateway", "auth", "keys")


def cmd_keys_add(args: argparse.Namespace) -> int:
    """Add a named key to the config file: its comments and layout stay as they are
    (:mod:`chatcompat.config_edit`); the token is printed once and only its SHA-256
    is written."""
    try:
        path = find_config_file(args.config, os.environ)
    except ConfigError as exc:
        print(f"chatcompat: {exc}", file=sys.stderr)
        return 2
    if path is None:
        print("chatcompat: no config file: run 'chatcompat init' first", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    entry: dict[str, t.Any] = {
        "id": args.id,
        "tokenSha256": hashlib.sha256(token.encode("utf-8")).hexdigest(),
    }
    if args.agents is not None:
        entry["agents"] = [a.strip() for a in args.agents.split(",") if a.strip()]
    if args.scopes is not None:
        entry["scopes"] = [s.strip() for s in args.scopes.split(",") if s.strip()]
    limits = {
        name: value
        for name, value in (
            ("requestsPerMinute", args.requests_per_minute),
            ("tokensPerMinute", args.tokens_per_minute),
            ("concurrentRuns", args.concurrent_runs),
        )
        if value is not None
    }
    if limits:
        entry["limits"] = limits
    try:
        before = _problems(load_document(path), path)
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
        edited = config_edit.append_to_list(text, KEYS_PATH, entry)
    except (ConfigError, config_edit.EditError) as exc:
        print(f"chatcompat: cannot edit {path}: {exc}", file=sys.stderr)
        return 2
    # What the new key brings (a duplicate id, an unknown agent...); problems the file
    # had before (a token this shell lacks) are the server's business.
    added = [p for p in _problems(json5.loads(edited), path) if p not in before]
    if added:
        for problem in added:
            print(f"chatcompat: config: {problem}", file=sys.stderr)
        print(f"chatcompat: {path} was not changed", file=sys.stderr)
        return 2
    config_edit.replace_file(path, edited)
    print(f"Added key {args.id!r} to {path} (its SHA-256 only).")
    print("Its token, shown only now (the server needs a restart or reload to know it):")
    print(f"  {token}")
    return 0


def _problems(doc: t.Any, path: str) -> list[str]:
    try:
        settings_from_document(doc, environ=os.environ, config_path=path)
    except ConfigError as exc:
        return exc.problems
    return []


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if not settings.api_keys:
        print("no named keys (gateway.auth.keys)")
        return 0
    print(f"{'ID':<20} {'SHA256':<14} {'AGENTS':<24} {'SCOPES':<36} LIMITS")
    for key in settings.api_keys:
        agents = "all" if key.agents is None else ",".join(sorted(key.agents)) or "none"
        scopes = ",".join(s for s in SCOPES if s in key.scopes) or "none"
        limits = " ".join(
            f"{name}={value}"
            for name, value in (
                ("rpm", key.limits.requests_per_minute),
                ("tpm", key.limits.tokens_per_minute),
                ("runs", key.limits.concurrent_runs),
            )
            if value is not None
        )
        digest = key.token_sha256.hex()[:12] + ".."
        print(f"{key.id:<20} {digest:<14} {agents:<24} {scopes:<36} {limits or '-'}")
    return 0
