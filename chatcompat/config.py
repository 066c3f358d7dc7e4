"""Load, validate and normalise the gateway's JSON5 configuration file.

The file is found at (first hit wins): ``--config PATH``, ``$CHATCOMPAT_CONFIG``,
``./chatcompat.json5``, ``$CHATCOMPAT_STATE_DIR/chatcompat.json5`` (state dir default
``~/.chatcompat``). Without a file the built-in defaults apply (endpoint disabled).

The whole document is checked against one JSON Schema; every problem is reported
with its key path, and :class:`ConfigError` carries all of them at once. Each agent's
backend checks its own options (:meth:`~chatcompat.agents.base.Agent.check_options`)
and the store its URL (:meth:`~chatcompat.sessions.base.SessionStore.check_url`); both
are looked up only when a file names them, so importing this module loads neither.
The values built here are the plain types of :mod:`chatcompat.settings`.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import typing as t
from importlib import resources

import json5
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .settings import RESERVED_KEY_IDS
from .settings import SECRET_KEY
from .settings import UNSENDABLE
from .settings import AgentConfig
from .settings import ApiKey
from .settings import Cors
from .settings import ImagePolicy
from .settings import KeyLimits
from .settings import RateLimit
from .settings import RedisOptions
from .settings import Settings
from .settings import StoreURL
from .settings import StoreURLError
from .settings import unsendable

AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


CONFIG_FILE_NAME = "chatcompat.json5"

_Path = tuple[str | int, ...]
_Problem = tuple[_Path, str]  # a key path in the document, and what is wrong there

# Document path -> Settings field, converted once the document is known to be valid
# (JSON Schema's "integer" also admits 5.0). Keys with more logic are handled below.
_CHAT = ("gateway", "http", "endpoints", "chatCompletions")
_RESPONSES = ("gateway", "http", "endpoints", "responses")
_SCALARS: tuple[tuple[_Path, str, t.Callable[[t.Any], t.Any]], ...] = (
    (("gateway", "port"), "port", int),
    (("gateway", "auth", "mode"), "auth_mode", str),
    (("gateway", "auth", "allowUnauthenticated"), "allow_unauthenticated", bool),
    ((*_CHAT, "enabled"), "chat_completions_enabled", bool),
    ((*_CHAT, "maxBodyBytes"), "max_body_bytes", int),
    ((*_RESPONSES, "enabled"), "responses_enabled", bool),
    ((*_RESPONSES, "maxBodyBytes"), "responses_max_body_bytes", int),
    (("gateway", "http", "sseKeepaliveSeconds"), "sse_keepalive_seconds", float),
    (("gateway", "http", "bodyTimeoutSeconds"), "body_timeout_seconds", float),
    (("sessions", "historyLimit"), "history_limit", int),
    (("sessions", "ttlSeconds"), "session_ttl_seconds", float),
    (("sessions", "statelessTtlSeconds"), "stateless_ttl_seconds", float),
    (("sessions", "lockTimeoutSeconds"), "lock_timeout_seconds", float),
)
# OpenClaw's gateway.bind also takes mode names; those naming one address are mapped so
# an OpenClaw config keeps working, the others need OpenClaw's own network discovery.
_BIND_MODES = {"loopback": "127.0.0.1", "lan": "0.0.0.0", "tailnet": "", "auto": "", "custom": ""}
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
# user:password@ in any URL a message quotes (a baseUrl, a header value...).
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# A value under a key named like this is a secret: error messages must not quote it.


class _NonFinite(Exception):
    """NaN or Infinity: valid JSON5, but they slip through every range check."""


def state_dir(environ: t.Mapping[str, str]) -> str:
    """Return ``$CHATCOMPAT_STATE_DIR`` or ``~/.chatcompat``, expanded and absolute.

    The directory is not created.
    """
    path = environ.get("CHATCOMPAT_STATE_DIR", "").strip() or "~/.chatcompat"
    return os.path.abspath(os.path.expanduser(path))


def find_config_file(cli_path: str | None, environ: t.Mapping[str, str]) -> str | None:
    """Return the absolute path of the config file, or None when there is none.

    First hit wins: ``cli_path``, ``$CHATCOMPAT_CONFIG``, ``./chatcompat.json5``,
    ``<state dir>/chatcompat.json5``.

    :raise ConfigError: when ``cli_path`` or ``$CHATCOMPAT_CONFIG`` names a missing
        file (an explicit choice must not silently fall back to another file).
    """
    explicit = (("--config", cli_path), ("CHATCOMPAT_CONFIG", environ.get("CHATCOMPAT_CONFIG")))
    for source, given in explicit:
        if given:
            path = os.path.abspath(os.path.expanduser(given))
            if not os.path.isfile(path):
                raise ConfigError([f"config file not found: {path} (from {source})"])
            return path
    for folder in (os.getcwd(), state_dir(environ)):
        path = os.path.join(folder, CONFIG_FILE_NAME)
        if os.path.isfile(path):
            return path
    return None


def load_document(path: str) -> dict[str, t.Any]:
    """Read and parse a JSON5 config file.

    Duplicate keys, NaN and Infinity are legal JSON5 but refused: in a config file
    they are mistakes.

    :raise ConfigError: with one message naming the file (and the line and column when
        known) when it cannot be read or parsed, or is not an object.
    """
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read()
        doc = json5.loads(text, allow_duplicate_keys=False, parse_constant=_refuse_non_finite)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read the config file: {reason}"]) from exc
    except _NonFinite as exc:
        raise ConfigError([f"{path}: {exc} is not allowed (numbers must be finite)"]) from exc
    except ValueError as exc:
        # json5 says '<string>:LINE <what> at column COL'; restate it as file:line:col.
        where = re.fullmatch(r"<string>:(\d+) (.*) at column (\d+)", str(exc), re.S)
        at, what = (f":{where[1]}:{where[3]}", where[2]) if where else ("", str(exc))
        raise ConfigError([f"{path}{at}: invalid JSON5: {what}"]) from exc
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: the top level must be an object ({{...}})"])
    return doc


def _refuse_non_finite(text: str) -> float:
    raise _NonFinite(text)


def config_schema() -> dict[str, t.Any]:
    """Return the JSON Schema of the config file (package data ``schemas/config.json``)."""
    text = resources.files("chatcompat").joinpath("schemas/config.json").read_text("utf-8")
    return t.cast(dict[str, t.Any], json.loads(text))


@functools.cache
def _document_validator() -> Draft202012Validator:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def _options_validator(cls: t.Any) -> Draft202012Validator:
    Draft202012Validator.check_schema(cls.options_schema)
    return Draft202012Validator(cls.options_schema)


def settings_from_document(
    doc: t.Mapping[str, t.Any],
    *,
    environ: t.Mapping[str, str],
    config_path: str | None = None,
) -> Settings:
    """Validate a parsed config document and build the :class:`Settings`.

    :param doc: the parsed file; ``{}`` gives the built-in defaults.
    :param environ: source of the secrets, ``CHATCOMPAT_BIND`` and the state dir.
    :param config_path: the file ``doc`` came from; relative SQLite paths are resolved
        against its directory (against the working directory when None).
    :raise ConfigError: listing every problem, one ``key.path: message`` line each.
    """
    problems = _schema_problems(_document_validator(), doc, ())
    fields: dict[str, t.Any] = {"state_dir": state_dir(environ), "config_path": config_path}
    fields.update(_listen_address(doc, environ, problems))
    fields.update(_auth(doc, environ, fields.get("bind", Settings.bind), problems))
    fields["trusted_proxies"] = _trusted_proxies(doc, problems)
    fields.update(_agents(doc, environ, problems))
    fields["api_keys"] = _api_keys(doc, environ, fields, problems)
    fields["session_store"] = _store_url(doc, environ, config_path, problems)
    if problems:
        problems.sort(key=lambda problem: [(isinstance(key, str), key) for key in problem[0]])
        raise ConfigError(
            [f"{_format_path(path)}: {without_credentials(message)}" for path, message in problems]
        )
    # The document is valid from here on, so the conversions cannot fail.
    for path, name, convert in _SCALARS:
        value = _lookup(doc, path)
        if value is not None and name not in fields:  # CHATCOMPAT_BIND beats gateway.port
            fields[name] = convert(value)
    fields["rate_limit"] = _rate_limit(_lookup(doc, ("gateway", "auth", "rateLimit")))
    fields["redis"] = _redis_options(_lookup(doc, ("sessions", "redis")) or {})
    fields.update(_browser_and_sessions(doc))
    return Settings(**fields)


def load_settings(
    cli_path: str | None = None, environ: t.Mapping[str, str] | None = None
) -> Settings:
    """Find, read and validate the configuration; built-in defaults without a file.

    :param cli_path: the ``--config`` option, if given.
    :param environ: the environment; ``os.environ`` when None.
    :raise ConfigError: when the file is missing, unreadable or invalid.
    """
    environ = os.environ if environ is None else environ
    path = find_config_file(cli_path, environ)
    doc = load_document(path) if path else {}
    return settings_from_document(doc, environ=environ, config_path=path)


def _lookup(doc: t.Any, path: _Path) -> t.Any:
    """Return the value at ``path``, or None when it or a parent object is absent."""
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def without_credentials(message: str) -> str:
    """``message`` with the ``user:password@`` of any URL in it redacted."""
    return _URL_CREDENTIALS.sub(r"\1<redacted>@", message)


def _format_path(path: _Path) -> str:
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif _PLAIN_KEY.fullmatch(key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text or "(root)"


def _schema_problems(
    validator: Draft202012Validator, instance: t.Any, prefix: _Path, also_known: t.Any = ()
) -> list[_Problem]:
    problems: list[_Problem] = []
    for error in validator.iter_errors(instance):
        path = prefix + tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and "patternProperties" not in schema:
            # One line per unknown key, at its own path, with the keys expected there:
            # the usual cause is a typo.
            known = {*schema.get("properties", {}), *also_known}
            for key in error.instance.keys() - known:
                expected = ", ".join(sorted(known)) or "none"
                problems.append(((*path, key), f"unknown key (expected one of: {expected})"))
            continue
        last_key = next((key for key in reversed(path) if isinstance(key, str)), "")
        message = error.message
        if SECRET_KEY.search(last_key) or _holds_secret(error.instance):
            message = message.replace(repr(error.instance), "<redacted>")
        problems.append((path, message))
    return problems


def _holds_secret(value: t.Any) -> bool:
    if isinstance(value, dict):
        return any(bool(SECRET_KEY.search(k)) or _holds_secret(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_secret(item) for item in value)


def _listen_address(
    doc: t.Mapping[str, t.Any], environ: t.Mapping[str, str], problems: list[_Problem]
) -> dict[str, t.Any]:
    fields: dict[str, t.Any] = {}
    bind = _lookup(doc, ("gateway", "bind"))
    if isinstance(bind, str) and bind:
        host = _BIND_MODES.get(bind, bind.removeprefix("[").removesuffix("]"))
        if not host:
            problems.append((("gateway", "bind"), f"OpenClaw bind mode {bind!r} is not supported"))
        elif not _valid_host(host):
            message = f"{bind!r} is not a host name or IP address (the port goes in gateway.port)"
            problems.append((("gateway", "bind"), message))
        fields["bind"] = host
    # CHATCOMPAT_BIND is how `chatcompat serve --bind` reaches every gunicorn process.
    override = environ.get("CHATCOMPAT_BIND", "").strip()
    if override:
        try:
            fields["bind"], port = _split_bind(override)
        except ValueError as exc:
            message = f"{override!r} is not host, host:port or [IPv6]:port ({exc})"
            problems.append((("CHATCOMPAT_BIND",), message))
        else:
            if port is not None:
                fields["port"] = port
    return fields


def _split_bind(value: str) -> tuple[str, int | None]:
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", value)
    if bracketed:
        host, port = bracketed[1], bracketed[2]
        if ":" not in host:
            raise ValueError("brackets are for IPv6 addresses")
    elif value.count(":") > 1:
        host, port = value, None  # a bare IPv6 address: with a port it needs brackets
    else:
        host, colon, port = value.partition(":")
        port = port if colon else None
    if not _valid_host(host):
        raise ValueError(f"bad host {host!r}")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"bad port {port!r}")
    return host, None if port is None else int(port)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))
    return True


def _is_loopback(host: str) -> bool:
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth(
    doc: t.Mapping[str, t.Any], environ: t.Mapping[str, str], bind: str, problems: list[_Problem]
) -> dict[str, t.Any]:
    auth = _lookup(doc, ("gateway", "auth"))
    auth = auth if isinstance(auth, dict) else {}
    mode = auth.get("mode", Settings.auth_mode)
    if mode in ("token", "password"):
        given = auth.get(mode, "")
        if not isinstance(given, str):
            return {}  # the schema reported it
        names = (f"CHATCOMPAT_GATEWAY_{mode.upper()}", f"OPENCLAW_GATEWAY_{mode.upper()}")
        sources = (
            (("gateway", "auth", mode), given),
            *(((name,), environ.get(name, "")) for name in names),
        )
        # The first one that is not blank is the secret; only that one is checked.
        chosen = next(((path, value) for path, value in sources if value.strip()), None)
        if chosen is None and _lookup(doc, ("gateway", "auth", "keys")):
            return {"auth_secret": None}  # named keys only: no operator credential
        if chosen is None:
            message = f"{mode} mode needs a {mode} (set gateway.auth.{mode} or {names[1]})"
            problems.append((("gateway", "auth", mode), message))
            return {"auth_secret": None}
        if unsendable(chosen[1]):
            problems.append((chosen[0], UNSENDABLE))
        return {"auth_secret": chosen[1]}
    if mode == "none" and not _is_loopback(bind) and auth.get("allowUnauthenticated") is not True:
        message = (
            f"mode 'none' on the non-loopback address {bind!r} lets anyone reach the agents;"
            " set gateway.auth.allowUnauthenticated: true if that is intended"
        )
        problems.append((("gateway", "auth", "mode"), message))
    return {}


def _redis_options(value: t.Mapping[str, t.Any]) -> RedisOptions:
    """``sessions.redis`` (already valid)."""
    minimum, wait = value.get("minReplicas"), value.get("failoverWaitSeconds")
    return RedisOptions(
        min_replicas=None if minimum is None else int(minimum),
        wait_timeout_seconds=float(value.get("waitTimeoutSeconds", 1)),
        failover_wait_seconds=None if wait is None else float(wait),
    )


def _rate_limit(value: t.Any) -> RateLimit | None:
    if value is False:
        return None
    if not isinstance(value, dict):  # absent or true: on, with the defaults
        return RateLimit()
    default = RateLimit()
    return RateLimit(
        max_attempts=int(value.get("maxAttempts", default.max_attempts)),
        window_seconds=value.get("windowMs", default.window_seconds * 1000) / 1000,
        lockout_seconds=value.get("lockoutMs", default.lockout_seconds * 1000) / 1000,
        exempt_loopback=bool(value.get("exemptLoopback", default.exempt_loopback)),
    )


def _browser_and_sessions(doc: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``gateway.http.cors`` and ``sessions.userKeys`` (the document is valid)."""
    fields: dict[str, t.Any] = {}
    cors = _lookup(doc, ("gateway", "http", "cors"))
    if isinstance(cors, dict):
        fields["cors"] = Cors(
            allow_origins=tuple(origin.lower() for origin in cors["allowOrigins"]),
            max_age_seconds=int(cors.get("maxAgeSeconds", Cors.max_age_seconds)),
        )
    user_keys = _lookup(doc, ("sessions", "userKeys"))
    if isinstance(user_keys, bool):
        fields["session_user_keys"] = user_keys
    return fields


def _trusted_proxies(doc: t.Mapping[str, t.Any], problems: list[_Problem]) -> tuple[str, ...]:
    proxies = _lookup(doc, ("gateway", "trustedProxies"))
    normalized: list[str] = []
    for index, item in enumerate(proxies if isinstance(proxies, list) else ()):
        if not isinstance(item, str):
            continue  # the schema reported it
        try:
            parse = ipaddress.ip_network if "/" in item else ipaddress.ip_address
            normalized.append(str(parse(item.strip())))
        except ValueError:
            message = f"{item!r} is not an IP address or CIDR network"
            try:  # host bits set: say what was probably meant rather than guess silently
                message += f" (did you mean {ipaddress.ip_network(item.strip(), strict=False)}?)"
            except ValueError:
                pass
            problems.append((("gateway", "trustedProxies", index), message))
    return tuple(normalized)


def _agents(
    doc: t.Mapping[str, t.Any], environ: t.Mapping[str, str], problems: list[_Problem]
) -> dict[str, t.Any]:
    entries = _lookup(doc, ("agents", "list"))
    defaults = _lookup(doc, ("agents", "defaults"))
    defaults = defaults if isinstance(defaults, dict) else {}
    agents: list[AgentConfig] = []
    first_at: dict[str, int] = {}
    default_at: int | None = None
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        at: _Path = ("agents", "list", index)
        if not isinstance(entry, dict):
            continue
        merged = {**defaults, **entry}
        merged.update(_merged_images(defaults, entry))
        agent = _agent(at, merged, environ, problems)
        if agent is None:
            continue
        if agent.id in first_at:
            message = f"duplicate agent id {agent.id!r} (also agents.list[{first_at[agent.id]}])"
            problems.append(((*at, "id"), message))
        first_at.setdefault(agent.id, index)
        if agent.default and default_at is not None:
            message = f"only one agent may be the default (agents.list[{default_at}] is)"
            problems.append(((*at, "default"), message))
        elif agent.default:
            default_at = index
        agents.append(agent)
    if not agents:  # no list, an empty one, or only broken entries (already reported)
        return {}  # Settings' defaults: one agent "main" with backend "echo"
    default_id = next((agent.id for agent in agents if agent.default), agents[0].id)
    return {"agents": tuple(agents), "default_agent_id": default_id}


def _agent(
    at: _Path, merged: dict[str, t.Any], environ: t.Mapping[str, str], problems: list[_Problem]
) -> AgentConfig | None:
    if not isinstance(merged.get("id"), str):
        return None  # the schema reported it
    agent_id = merged["id"].lower()
    if not re.fullmatch(AGENT_ID_PATTERN, agent_id):
        message = f"{merged['id']!r} is not a valid agent id (lowercased: {AGENT_ID_PATTERN})"
        problems.append(((*at, "id"), message))
    # The schema is the one list of generic keys; every other key is a backend option.
    generic = _document_validator().schema["$defs"]["agentKeys"]["properties"]
    options = {key: value for key, value in merged.items() if key not in generic}
    if isinstance(merged.get("models"), dict):
        options["models"] = merged["models"]  # pi's models.json object, not the list
    backend = merged.get("backend")
    if backend is None:
        problems.append((at, "'backend' is a required property (here or in agents.defaults)"))
    elif isinstance(backend, str):
        problems.extend(_options_problems(at, backend, options, generic, environ))
        problems.extend(_model_choice_problems(at, backend, options, merged.get("models")))
    kwargs: dict[str, t.Any] = {}
    if isinstance(merged.get("timeoutSeconds"), (int, float)):
        kwargs["timeout_seconds"] = float(merged["timeoutSeconds"])
    if isinstance(merged.get("historyLimit"), (int, float)):
        kwargs["history_limit"] = int(merged["historyLimit"])
    if isinstance(merged.get("systemPrompt"), str):
        kwargs["system_prompt"] = merged["systemPrompt"]
    if isinstance(merged.get("images"), dict):
        kwargs["images"] = _image_policy(merged["images"])
    kwargs.update(_agent_reasoning(merged))
    if isinstance(merged.get("models"), list):
        kwargs["models"] = tuple(model for model in merged["models"] if isinstance(model, str))
    backend = backend if isinstance(backend, str) else ""
    default = merged.get("default") is True
    return AgentConfig(id=agent_id, backend=backend, options=options, default=default, **kwargs)


def _merged_images(
    defaults: t.Mapping[str, t.Any], entry: t.Mapping[str, t.Any]
) -> dict[str, t.Any]:
    """``images`` of ``agents.defaults`` and of an entry, merged key by key (the entry's
    keys win), so an entry can change one limit and keep the shared rest."""
    shared, own = defaults.get("images"), entry.get("images")
    if isinstance(shared, dict) and isinstance(own, dict):
        return {"images": {**shared, **own}}
    return {}


def _image_policy(images: t.Mapping[str, t.Any]) -> ImagePolicy:
    """The ``images`` object as a policy. A value of the wrong type (the schema reported
    it, so these settings are never used) falls back to its default."""
    default = ImagePolicy()

    def number(key: str, fallback: float) -> float:
        value = images.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return fallback

    def strings(key: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
        value = images.get(key)
        if not isinstance(value, list) or not value:
            return fallback
        return tuple(item for item in value if isinstance(item, str))

    history = images.get("history")
    return ImagePolicy(
        allow_url=images.get("allowUrl") is True,
        url_allowlist=tuple(host.lower() for host in strings("urlAllowlist", ())),
        allowed_mimes=strings("allowedMimes", default.allowed_mimes),
        max_bytes=int(number("maxBytes", default.max_bytes)),
        max_parts=int(number("maxParts", default.max_parts)),
        max_total_bytes=int(number("maxTotalBytes", default.max_total_bytes)),
        history=history if isinstance(history, str) else default.history,
        max_redirects=int(number("maxRedirects", default.max_redirects)),
        timeout_seconds=number("timeoutMs", default.timeout_seconds * 1000) / 1000,
    )


def _agent_reasoning(merged: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The agent's ``reasoning`` switch (the schema checked its value)."""
    if merged.get("reasoning") in ("relay", "drop"):
        return {"reasoning": merged["reasoning"]}
    return {}


def _options_problems(
    at: _Path,
    backend: str,
    options: dict[str, t.Any],
    generic: t.Any,
    environ: t.Mapping[str, str],
) -> list[_Problem]:
    """What the backend finds wrong with its options: its own checks
    (:meth:`~chatcompat.agents.base.Agent.check_options`), then its ``options_schema``."""
    # Looked up here, not at import: the backend modules are the agents layer, above
    # this loader's settings, and only the backends a file names are imported.
    from .agents import UnknownBackend
    from .agents import backend_class

    try:
        cls = backend_class(backend)
        validator = _options_validator(cls)  # type: ignore[arg-type]  # classes hash
    except UnknownBackend as exc:
        return [((*at, "backend"), str(exc))]
    except SchemaError as exc:  # a plugin's bug; still one readable line, not a traceback
        return [((*at, "backend"), f"{backend!r} has a broken options schema: {exc.message}")]
    found = [((*at, *path), message) for path, message in cls.check_options(options, environ)]
    own = cls.options_schema.get("properties", {})
    if isinstance(options.get("models"), dict) and "models" not in own:
        # Only pi has an object "models" (its models.json); a list is the generic key.
        found.append(((*at, "models"), "must be a list of model names for this backend"))
    return found + _schema_problems(validator, options, at, also_known=generic)


def _model_choice_problems(
    at: _Path, backend: str, options: dict[str, t.Any], models: t.Any
) -> list[_Problem]:
    """What keeps the backend from running the models an agent lists for
    ``x-openclaw-model`` (:meth:`~chatcompat.agents.base.Agent.check_model_choice`)."""
    if not isinstance(models, list) or not models:
        return []
    from .agents import UnknownBackend
    from .agents import backend_class

    try:
        message = backend_class(backend).check_model_choice(options)
    except UnknownBackend:
        return []  # reported with the options
    return [] if message is None else [((*at, "models"), message)]


def _store_url(
    doc: t.Mapping[str, t.Any],
    environ: t.Mapping[str, str],
    config_path: str | None,
    problems: list[_Problem],
) -> str:
    url = _lookup(doc, ("sessions", "store"))
    if url is None:
        return "sqlite:///" + os.path.join(state_dir(environ), "sessions.db")
    if not isinstance(url, str) or not url:
        return ""  # the schema reported it
    try:
        parsed = StoreURL.parse(url)
    except StoreURLError as exc:  # the message never quotes the URL
        problems.append((("sessions", "store"), str(exc)))
        return ""
    # The store checks the rest now (this connects to nothing): a URL it cannot use
    # would otherwise only fail in the workers, on every request. Looked up here: a
    # store module imports its driver.
    from .sessions import store_class

    found = store_class(parsed.scheme).check_url(parsed)
    problems.extend((("sessions", "store"), message) for message in found)
    # Relative SQLite paths are relative to the file's directory.
    base = os.path.dirname(config_path) if config_path else os.getcwd()
    return "" if found else parsed.resolved(base)


# -- named API keys (gateway.auth.keys, SPEC 16) ------------------------------------

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_TOKEN_FORMS = ("token", "tokenSha256", "tokenEnv")
_LIMITS = (
    ("requestsPerMinute", "requests_per_minute"),
    ("tokensPerMinute", "tokens_per_minute"),
    ("concurrentRuns", "concurrent_runs"),
)


def _api_keys(
    doc: t.Mapping[str, t.Any],
    environ: t.Mapping[str, str],
    fields: t.Mapping[str, t.Any],
    problems: list[_Problem],
) -> tuple[ApiKey, ...]:
    """``gateway.auth.keys``: each token resolved to its SHA-256 (the secret itself is
    not kept); a duplicate id or token, a malformed hash or an unknown agent is a
    problem at its key path."""
    entries = _lookup(doc, ("gateway", "auth", "keys"))
    if not isinstance(entries, list) or not entries:
        return ()
    at_keys: _Path = ("gateway", "auth", "keys")
    if fields.get("auth_mode", _lookup(doc, ("gateway", "auth", "mode"))) == "none":
        problems.append((at_keys, "named keys need gateway.auth.mode 'token' (not 'none')"))
    agent_ids = {agent.id for agent in fields.get("agents", Settings.agents)}
    operator = fields.get("auth_secret")
    ids: dict[str, int] = {}
    digests: dict[bytes, str] = {}
    if operator:
        digests[hashlib.sha256(operator.encode("utf-8")).digest()] = "the operator's token"
    keys: list[ApiKey] = []
    for index, entry in enumerate(entries):
        at: _Path = (*at_keys, index)
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue  # the schema reported it
        key_id = entry["id"]
        if not re.fullmatch(AGENT_ID_PATTERN, key_id):
            problems.append(((*at, "id"), f"{key_id!r} is not a valid key id ({AGENT_ID_PATTERN})"))
        elif key_id in RESERVED_KEY_IDS:
            problems.append(((*at, "id"), f"{key_id!r} is reserved (it names a principal)"))
        elif key_id in ids:
            message = f"duplicate key id {key_id!r} (also gateway.auth.keys[{ids[key_id]}])"
            problems.append(((*at, "id"), message))
        ids.setdefault(key_id, index)
        digest = _key_digest(entry, at, environ, problems)
        if digest is not None:
            if digest in digests:
                message = f"the same token as {digests[digest]} (each key needs its own)"
                problems.append((at, message))
            digests.setdefault(digest, f"gateway.auth.keys[{index}]")
        agents = entry.get("agents")
        allowed = None
        if isinstance(agents, list):
            allowed = frozenset(a.lower() for a in agents if isinstance(a, str))
            for position, agent in enumerate(agents):
                if isinstance(agent, str) and agent.lower() not in agent_ids:
                    message = (
                        f"unknown agent {agent!r} (configured: {', '.join(sorted(agent_ids))})"
                    )
                    problems.append(((*at, "agents", position), message))
        scopes = entry.get("scopes")
        given_limits = entry.get("limits")
        limits: dict[str, t.Any] = given_limits if isinstance(given_limits, dict) else {}
        keys.append(
            ApiKey(
                id=key_id,
                token_sha256=digest or b"",
                agents=allowed,
                scopes=frozenset(scopes) if isinstance(scopes, list) else ApiKey.scopes,
                token=_key_token(entry, environ),
                limits=KeyLimits(
                    **{
                        name: int(limits[given])
                        for given, name in _LIMITS
                        if isinstance(limits.get(given), (int, float))
                    }
                ),
            )
        )
    return tuple(keys)


def _key_token(entry: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> str | None:
    """The token of a ``token`` or ``tokenEnv`` entry (None for ``tokenSha256``)."""
    if isinstance(entry.get("token"), str):
        return t.cast(str, entry["token"])
    if isinstance(entry.get("tokenEnv"), str):
        return environ.get(entry["tokenEnv"]) or None
    return None


def _key_digest(
    entry: t.Mapping[str, t.Any],
    at: _Path,
    environ: t.Mapping[str, str],
    problems: list[_Problem],
) -> bytes | None:
    """The SHA-256 of a key's token, from whichever one form the entry gives."""
    given = [form for form in _TOKEN_FORMS if form in entry]
    if len(given) != 1:
        found = ", ".join(given) or "none"
        problems.append((at, f"give exactly one of token, tokenSha256, tokenEnv (found: {found})"))
        return None
    form = given[0]
    value = entry[form]
    if not isinstance(value, str):
        return None  # the schema reported it
    if form == "tokenSha256":
        if not _SHA256_HEX.fullmatch(value):
            problems.append(((*at, form), "must be 64 hex digits (the SHA-256 of the token)"))
            return None
        return bytes.fromhex(value)
    if form == "tokenEnv":
        name, value = value, environ.get(value, "")
        if not value.strip():
            problems.append(((*at, form), f"the environment variable {name!r} is unset or empty"))
            return None
    if not value.strip():
        problems.append(((*at, form), "an empty token"))
        return None
    if unsendable(value):
        problems.append(((*at, form), UNSENDABLE))
        return None
    return hashlib.sha256(value.encode("utf-8")).digest()
