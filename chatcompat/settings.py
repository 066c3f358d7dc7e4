"""The gateway's settings as plain values: what :mod:`chatcompat.config` builds from
the configuration file and every other module reads.

This module is the bottom layer of the package: it imports nothing of chatcompat
(and no third-party package), so any module may import it without pulling in the
loader, its JSON5 and JSON Schema libraries, the agents or the stores. Besides the
settings types it holds the value rules both the loader and the code using a value
must agree on: :class:`StoreURL`, the one parser of ``sessions.store`` (used by the
loader and by :func:`chatcompat.sessions.open_store`), and :func:`unsendable`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t
import urllib.parse

DEFAULT_PORT = 18789
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """Failed-auth lockout (``gateway.auth.rateLimit``)."""

    max_attempts: int = 10
    window_seconds: float = 60.0
    lockout_seconds: float = 300.0
    exempt_loopback: bool = True


# -- named API keys (gateway.auth.keys, SPEC 16) ------------------------------------

#: What a key may do: each route needs its scope (``model_override``: the
#: ``x-openclaw-model`` header).
SCOPES = ("chat", "responses", "models", "model_override")
DEFAULT_SCOPES = frozenset({"chat", "responses", "models"})
#: Ids a named key may not take: they name the principals without a key.
RESERVED_KEY_IDS = frozenset({"operator", "anonymous"})


@dataclasses.dataclass(frozen=True)
class KeyLimits:
    """The limits of one named key (None: unlimited), counted in rolling 60 s windows
    (requests, tokens) and as concurrent runs, shared through the session store."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_runs: int | None = None

    @property
    def any(self) -> bool:
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.concurrent_runs is not None
        )


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One entry of ``gateway.auth.keys``: its token is known only by its SHA-256.

    :param agents: the agent ids the key may use; None: all of them.
    """

    id: str
    token_sha256: bytes = dataclasses.field(repr=False)
    agents: frozenset[str] | None = None
    scopes: frozenset[str] = DEFAULT_SCOPES
    limits: KeyLimits = KeyLimits()
    # The token itself when the file or the environment gave it (``token``,
    # ``tokenEnv``): only for the redactor, which keeps it out of every log line.
    token: str | None = dataclasses.field(default=None, repr=False, compare=False)


# -- image policy (``images`` of an agent) ----------------------------------------------

# OpenClaw's chat-completions defaults: the types its endpoint takes, 10 MiB per image,
# 8 image parts and 20 MiB of images per request, 3 redirects and 10 s per fetch.
DEFAULT_IMAGE_MIMES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic",
                       "image/heif")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ImagePolicy:
    """What an agent takes of a request's ``image_url`` parts (``images`` of the agent).

    ``url_allowlist`` holds lowercased host names; ``*.example.com`` matches the
    subdomains of example.com, not example.com itself. Empty: any host (when
    ``allow_url``).
    """

    allow_url: bool = False
    url_allowlist: tuple[str, ...] = ()
    allowed_mimes: tuple[str, ...] = DEFAULT_IMAGE_MIMES
    max_bytes: int = 10 * 1024 * 1024
    max_parts: int = 8
    max_total_bytes: int = 20 * 1024 * 1024
    # "marker": earlier turns' images reach the agent as a short text; "keep": as sent.
    history: str = "marker"
    max_redirects: int = 3
    timeout_seconds: float = 10.0


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """``sessions.redis``: how many replicas must confirm a turn write (Redis ``WAIT``)."""

    # None: 1 for a Sentinel URL whose sentinels know a replica of the primary, else 0.
    min_replicas: int | None = None
    wait_timeout_seconds: float = 1.0
    # How long a turn write waits for a failover; None: 10 s behind Sentinel, else 0.
    failover_wait_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """One entry of ``agents.list`` with ``agents.defaults`` merged in.

    ``options`` holds the backend-specific keys (everything that is not one of the
    generic keys below), already checked by the backend (its ``options_schema`` and
    its ``check_options``).
    """

    id: str
    backend: str
    options: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    system_prompt: str | None = None
    timeout_seconds: float = 600.0
    history_limit: int | None = None
    default: bool = False
    images: ImagePolicy = dataclasses.field(default_factory=ImagePolicy)
    # "relay" or "drop": whether the agent's reasoning reaches the client (never stored).
    reasoning: str = "relay"
    # The upstream models a request may choose with ``x-openclaw-model``; empty: none.
    models: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Cors:
    """Browser access to ``/v1`` (``gateway.http.cors``); off when not configured."""

    # Origins as browsers send them (``scheme://host[:port]``, lowercased); ``*``: any.
    allow_origins: tuple[str, ...] = ()
    max_age_seconds: int = 600

    def allows(self, origin: str) -> bool:
        """Whether a request with this ``Origin`` header may read the responses."""
        return "*" in self.allow_origins or origin.lower() in self.allow_origins


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated configuration, with defaults and environment fallbacks applied."""

    state_dir: str
    config_path: str | None = None
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth_mode: str = "token"
    # The token (token mode) or the password (password mode); None in mode "none".
    auth_secret: str | None = None
    allow_unauthenticated: bool = False
    rate_limit: RateLimit | None = RateLimit()
    trusted_proxies: tuple[str, ...] = ()
    chat_completions_enabled: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    responses_enabled: bool = False
    responses_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    sse_keepalive_seconds: float = 15.0
    body_timeout_seconds: float = 30.0
    agents: tuple[AgentConfig, ...] = (AgentConfig(id="main", backend="echo"),)
    default_agent_id: str = "main"
    # A URL :meth:`StoreURL.parse` accepts; a SQLite path in it is absolute.
    session_store: str = ""
    history_limit: int = 100
    session_ttl_seconds: float = 30 * 86400.0
    stateless_ttl_seconds: float = 3600.0
    # None: wait as long as the agent's own timeout.
    lock_timeout_seconds: float | None = None
    # False: ``user`` is passed on to the agent but never selects a session.
    session_user_keys: bool = True
    cors: Cors | None = None
    redis: RedisOptions = RedisOptions()
    # Named API keys besides the operator's secret (SPEC 16).
    api_keys: tuple[ApiKey, ...] = ()

    def agent(self, agent_id: str) -> AgentConfig | None:
        """Return the configured agent with this (lowercased) id, or None."""
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        return None


# -- value rules -------------------------------------------------------------------

# A secret or header value that cannot be sent as it is (http.client would refuse it,
# quoting it in its error, or the upstream would not recognise it): a start-up problem,
# whose message never shows the value.
UNSENDABLE = "has control characters or leading/trailing whitespace (value not shown)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# A configuration key or option whose value is a secret itself: its name ends in one
# of these (token, password, apiKey, a pi provider's apiKey, an Authorization value).
SECRET_KEY = re.compile(r"(auth|token|password|secret|api_?key|authorization|credentials?)$", re.I)
# A header or environment variable named like this holds a secret (X-Api-Key,
# GITHUB_TOKEN, Cookie): looser, as those names are not ours.
SECRET_NAME = re.compile(r"auth|key|token|secret|passw|credential|cookie", re.I)


def unsendable(value: t.Any) -> bool:
    """Whether ``value`` is a string that cannot go in an HTTP header as it is.

    :param value: any configured value; only strings can be unsendable.
    """
    return isinstance(value, str) and (value != value.strip() or bool(_CONTROL.search(value)))


STORE_URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, redis://, rediss://,"
    " redis+sentinel:// or rediss+sentinel://"
)
REDIS_URL_FORM = "redis://[:password@]host[:port][/db]"
SENTINEL_URL_FORM = "redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]"
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
REDIS_SCHEMES = ("redis", "rediss", *SENTINEL_SCHEMES)
DEFAULT_REDIS_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class StoreURLError(ValueError):
    """``sessions.store`` is not a store URL. The message never quotes the URL, which
    may carry a password."""


@dataclasses.dataclass(frozen=True)
class StoreURL:
    """A parsed ``sessions.store`` URL.

    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (as in
    SQLAlchemy: three slashes and a relative path, four and an absolute one; the path
    is taken verbatim, not percent-decoded; ``?options`` are kept) names a SQLite file.
    ``redis://[:password@]host[:port][/db]`` or ``rediss://`` (TLS) names a Redis
    database; its query options are the Redis store's to check.
    ``redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]`` (or
    ``rediss+sentinel://``, TLS) names the database of the Redis primary that the
    Sentinels at those addresses (default port 26379) know as ``service``.
    """

    # "sqlite", "redis" or "rediss" (lowercased).
    scheme: str
    # The URL as written; it may hold a password, so it is kept out of the repr.
    url: str = dataclasses.field(repr=False)
    # SQLite: the file as written, relative to a base directory unless absolute.
    path: str = ""
    # The text after "?", undecoded (an option may be a password: not in the repr).
    query: str = dataclasses.field(default="", repr=False)
    # Redis: where it is, with the defaults applied.
    host: str = ""
    port: int = 0
    db: int = 0
    # Redis Sentinel: the sentinels' (host, port) and the primary's service name.
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        """Parse a store URL (nothing is opened or resolved).

        :param url: the ``sessions.store`` value.
        :raise StoreURLError: the URL is none of the forms above (the message names
            what is wrong and the forms expected, never the URL).
        """
        scheme, separator, rest = url.partition("://")
        scheme = scheme.lower() if separator else ""
        if scheme == "sqlite":
            # rest is "/" + path: "//abs/x.db" for an absolute path, "/rel/x.db" otherwise.
            path, _, query = rest.partition("?")
            if not path.startswith("/") or path in ("/", "//"):
                raise StoreURLError(f"a SQLite URL has no host (expected {STORE_URL_FORMS})")
            return cls(scheme=scheme, url=url, path=path[1:], query=query)
        if scheme in SENTINEL_SCHEMES:
            return cls._parse_sentinel(scheme, url)
        if scheme in REDIS_SCHEMES:
            try:
                parts = urllib.parse.urlsplit(url)
                port = parts.port or DEFAULT_REDIS_PORT  # .port raises for a bad port
            except ValueError:
                message = f"a redis session store URL must look like {REDIS_URL_FORM}"
                raise StoreURLError(message) from None
            db = parts.path.strip("/")
            if db and not db.isdigit():  # redis-py would silently use database 0
                raise StoreURLError(
                    f"a redis session store URL must look like {REDIS_URL_FORM}"
                    " (the database must be a number)"
                )
            return cls(
                scheme=scheme,
                url=url,
                query=parts.query,
                host=parts.hostname or "localhost",
                port=port,
                db=int(db or 0),
            )
        message = f"unsupported scheme {scheme!r}" if scheme else "not a URL"
        raise StoreURLError(f"{message} (expected {STORE_URL_FORMS})")

    @classmethod
    def _parse_sentinel(cls, scheme: str, url: str) -> StoreURL:
        # urlsplit cannot read a netloc with several hosts (.port raises): split it here.
        bad = f"a Redis Sentinel session store URL must look like {SENTINEL_URL_FORM}"
        rest, _, query = url.partition("://")[2].partition("?")
        netloc, _, path = rest.partition("/")
        hosts = netloc.rpartition("@")[2]
        sentinels = []
        for address in hosts.split(","):
            host, port = _host_port(address, DEFAULT_SENTINEL_PORT)
            if not host or port is None:
                raise StoreURLError(f"{bad} (a sentinel address is malformed)")
            sentinels.append((host, port))
        service, _, db = path.partition("/")
        service, db = urllib.parse.unquote(service), db.strip("/")
        if not service:
            raise StoreURLError(f"{bad} (the service name is missing)")
        if db and not db.isdigit():
            raise StoreURLError(f"{bad} (the database must be a number)")
        return cls(
            scheme=scheme,
            url=url,
            query=query,
            host=sentinels[0][0],
            port=sentinels[0][1],
            db=int(db or 0),
            sentinels=tuple(sentinels),
            service=service,
        )

    @property
    def secrets(self) -> set[str]:
        """The URL's password and the values of its query options named like a secret
        (``sentinel_password``), each as written and percent-decoded."""
        try:
            found = {urllib.parse.urlsplit(self.url).password or ""}
        except ValueError:
            found = set()
        for part in self.query.split("&"):
            name, _, value = part.partition("=")
            if SECRET_KEY.search(urllib.parse.unquote_plus(name)):
                found.add(value)
        found |= {urllib.parse.unquote_plus(secret) for secret in found}
        found |= {urllib.parse.unquote(secret) for secret in found}
        return {secret for secret in found if secret}

    @property
    def option_names(self) -> list[str]:
        """The names of the query options, sorted (their values may be secrets)."""
        return sorted({part.partition("=")[0] for part in self.query.split("&") if part})

    @property
    def location(self) -> str:
        """Where the store is, for messages: never a password nor a user name."""
        if self.scheme == "sqlite":
            return f"sqlite:///{self.path}"
        if self.sentinels:
            hosts = ",".join(f"{_bracketed(host)}:{port}" for host, port in self.sentinels)
            service = urllib.parse.quote(self.service, safe="")
            return f"{self.scheme}://{hosts}/{service}/{self.db}"
        where = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{where}:{self.port}/{self.db}"

    def sqlite_file(self, base: str) -> str:
        """The SQLite file as an absolute path (``~`` expanded).

        :param base: the directory a relative path is relative to.
        """
        return os.path.abspath(os.path.join(base, os.path.expanduser(self.path)))

    def resolved(self, base: str) -> str:
        """The URL with a relative SQLite path made absolute (others unchanged).

        :param base: the directory a relative SQLite path is relative to.
        """
        if self.scheme != "sqlite":
            return self.url
        query = f"?{self.query}" if self.query else ""
        return f"sqlite:///{self.sqlite_file(base)}{query}"


def _host_port(address: str, default_port: int) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; port None when malformed."""
    if address.startswith("["):
        host, bracket, port = address[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return host, None
        port = port[1:]
    else:
        host, _, port = address.partition(":")
    if not port:
        return host, default_port
    return host, int(port) if port.isdigit() and 0 < int(port) < 65536 else None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
