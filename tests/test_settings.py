"""The settings leaf (chatcompat.settings) and the one parser of store URLs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from chatcompat.config import ConfigError
from chatcompat.config import settings_from_document
from chatcompat.sessions import open_store
from chatcompat.settings import StoreURL
from chatcompat.settings import StoreURLError

SECRET = "hunter2-pw"
TOKEN_ENV = {"CHATCOMPAT_GATEWAY_TOKEN": "t"}


@pytest.mark.live  # starts a real process
def test_the_settings_types_load_no_loader_library_agent_or_store() -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = (
        "import json, sys\n"
        "from chatcompat.settings import AgentConfig, RateLimit, Settings, StoreURL\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    unwanted = ("json5", "jsonschema", "redis", "chatcompat.")
    assert {name for name in loaded if name.startswith(unwanted)} == {"chatcompat.settings"}


# -- StoreURL.parse ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("sqlite:///sessions.db", {"scheme": "sqlite", "path": "sessions.db", "query": ""}),
        ("sqlite:///data/s.db", {"scheme": "sqlite", "path": "data/s.db"}),
        ("sqlite:////var/lib/s.db", {"scheme": "sqlite", "path": "/var/lib/s.db"}),
        ("SQLite:///~/s.db", {"scheme": "sqlite", "path": "~/s.db"}),
        ("sqlite:///s%20x.db?timeout=5&a=b", {"path": "s%20x.db", "query": "timeout=5&a=b"}),
        ("redis://", {"scheme": "redis", "host": "localhost", "port": 6379, "db": 0}),
        ("redis://cache.example", {"host": "cache.example", "port": 6379, "db": 0}),
        ("redis://:pw@127.0.0.1:6380/3", {"host": "127.0.0.1", "port": 6380, "db": 3}),
        ("rediss://u:pw@[::1]:7000/", {"scheme": "rediss", "host": "::1", "port": 7000}),
        ("redis://h/2?socket_timeout=5", {"db": 2, "query": "socket_timeout=5"}),
    ],
)
def test_valid_store_urls(url: str, fields: dict[str, object]) -> None:
    parsed = StoreURL.parse(url)
    assert {name: getattr(parsed, name) for name in fields} == fields
    assert parsed.url == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "not a URL"),
        ("sessions.db", "not a URL"),
        ("/var/lib/s.db", "not a URL"),
        (f"postgres://admin:{SECRET}@db/x", "unsupported scheme 'postgres'"),
        (f"mysql://root:{SECRET}@db/x", "unsupported scheme 'mysql'"),
        ("sqlite://", "a SQLite URL has no host"),
        ("sqlite:///", "a SQLite URL has no host"),
        ("sqlite:////", "a SQLite URL has no host"),
        ("sqlite:///?x=1", "a SQLite URL has no host"),
        (f"sqlite://admin:{SECRET}@db/x", "a SQLite URL has no host"),
        (f"redis://:{SECRET}@host:port/0", "must look like redis://"),
        (f"redis://:{SECRET}@host:99999/0", "must look like redis://"),
        (f"redis://:{SECRET}@host:6379/db", "the database must be a number"),
        (f"redis://user:{SECRET}@[::1/0", "must look like redis://"),
    ],
)
def test_invalid_store_urls_never_quote_the_url(url: str, expected: str) -> None:
    with pytest.raises(StoreURLError) as info:
        StoreURL.parse(url)
    assert expected in str(info.value)
    assert SECRET not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_no_credentials_in_the_repr_or_the_location() -> None:
    parsed = StoreURL.parse(f"rediss://admin:{SECRET}@[::1]:7000/2?password={SECRET}")
    assert SECRET not in repr(parsed) and "admin" not in repr(parsed)
    assert parsed.location == "rediss://[::1]:7000/2"
    assert parsed.option_names == ["password"]


# -- Redis Sentinel URLs ----------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    parsed = StoreURL.parse(
        f"rediss+sentinel://:{SECRET}@s1:26380,s2,[::1]:5/my%20master/3"
        f"?sentinel_password={SECRET}x&ssl_cert_reqs=none"
    )
    assert parsed.scheme == "rediss+sentinel"
    assert parsed.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5))
    assert (parsed.service, parsed.db) == ("my master", 3)
    assert parsed.location == "rediss+sentinel://s1:26380,s2:26379,[::1]:5/my%20master/3"
    assert SECRET not in repr(parsed) and SECRET not in parsed.location
    assert parsed.secrets == {SECRET, f"{SECRET}x"}
    assert parsed.option_names == ["sentinel_password", "ssl_cert_reqs"]
    assert StoreURL.parse("redis+sentinel://h/m").db == 0
    assert StoreURL.parse("REDIS+SENTINEL://h/m/").scheme == "redis+sentinel"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis+sentinel://:{SECRET}@h1:port/m", "a sentinel address is malformed"),
        (f"redis+sentinel://:{SECRET}@h1:0/m", "a sentinel address is malformed"),
        (f"redis+sentinel://:{SECRET}@h1,,h2/m", "a sentinel address is malformed"),
        (f"redis+sentinel://:{SECRET}@[::1/m", "a sentinel address is malformed"),
        (f"redis+sentinel://:{SECRET}@/m", "a sentinel address is malformed"),
        (f"redis+sentinel://:{SECRET}@h1", "the service name is missing"),
        (f"redis+sentinel://:{SECRET}@h1/", "the service name is missing"),
        (f"redis+sentinel://:{SECRET}@h1/m/x", "the database must be a number"),
    ],
)
def test_invalid_sentinel_urls_never_quote_the_url(url: str, expected: str) -> None:
    with pytest.raises(StoreURLError) as info:
        StoreURL.parse(url)
    assert expected in str(info.value) and "redis+sentinel://[:password@]host" in str(info.value)
    assert SECRET not in str(info.value)


def test_the_secrets_of_a_plain_url() -> None:
    assert StoreURL.parse("redis://:p%40ss@h/0?password=q%2Bw").secrets == {
        "p%40ss",
        "p@ss",
        "q%2Bw",
        "q+w",
    }
    assert StoreURL.parse("sqlite:///s.db?timeout=5").secrets == set()


def test_a_relative_sqlite_path_is_resolved_against_a_base(tmp_path: pathlib.Path) -> None:
    home = os.path.expanduser("~")
    assert StoreURL.parse("sqlite:///a/../s.db?x=1").resolved(str(tmp_path)) == (
        f"sqlite:///{tmp_path}/s.db?x=1"
    )
    assert StoreURL.parse("sqlite:////abs/s.db").resolved(str(tmp_path)) == "sqlite:////abs/s.db"
    assert StoreURL.parse("sqlite:///~/s.db").sqlite_file(str(tmp_path)) == f"{home}/s.db"
    url = f"redis://:{SECRET}@h/0"
    assert StoreURL.parse(url).resolved(str(tmp_path)) == url


# -- one parser for the loader and open_store ----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///s.db",
        "sqlite:////tmp/chatcompat-test/s.db?timeout=5",
        "redis://127.0.0.1:1/0",
        f"rediss://:{SECRET}@cache:6380/1",
        "sqlite:////",
        "sqlite://host/x.db",
        f"redis://:{SECRET}@host:6379/db",
        f"redis://:{SECRET}@h/0?socket_timeout={SECRET}",
        "postgres://db/x",
    ],
)
def test_the_loader_accepts_exactly_the_urls_open_store_opens(
    url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        settings = settings_from_document({"sessions": {"store": url}}, environ=TOKEN_ENV)
    except ConfigError as exc:
        assert SECRET not in str(exc)
        with pytest.raises(ValueError) as info:
            open_store(url)
        assert SECRET not in str(info.value)
    else:
        open_store(settings.session_store).close()  # nothing is opened before use


def test_the_loader_checks_a_redis_url_without_building_a_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatcompat.sessions.redis_store import RedisStore

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader built a RedisStore")

    monkeypatch.setattr(RedisStore, "__init__", refuse)
    url = "redis://127.0.0.1:6379/0"
    assert settings_from_document({"sessions": {"store": url}}, environ=TOKEN_ENV).session_store
    doc = {"sessions": {"store": f"redis://:{SECRET}@h/0?socket_timeout={SECRET}"}}
    with pytest.raises(ConfigError) as info:
        settings_from_document(doc, environ=TOKEN_ENV)
    [problem] = info.value.problems
    assert problem.startswith("sessions.store: a redis session store URL must look like")
    assert problem.endswith("(Invalid value for 'socket_timeout' in connection URL.)")
    assert SECRET not in problem
