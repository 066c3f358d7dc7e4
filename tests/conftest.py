"""Fixtures: an app built through the factory on a temporary SQLite store; the fake
OpenAI upstream (tests/fake_upstream.py), per test or shared by a module."""

from __future__ import annotations

import dataclasses
import pathlib
import typing as t

import pytest

from chatcompat import create_app
from chatcompat.settings import AgentConfig
from chatcompat.settings import RateLimit
from chatcompat.settings import Settings
from tests.fake_upstream import FakeUpstream

HERE = pathlib.Path(__file__).parent
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPTED = "tests.scripted_agent.ScriptedAgent"


def pytest_ignore_collect(collection_path: pathlib.Path, config: pytest.Config) -> bool | None:
    """The fast loop (``-m "not live"``) does not even import tests/live: every module
    there is marked live, and importing them (the openai SDK...) costs seconds."""
    if collection_path == HERE / "live" and config.getoption("markexpr") == "not live":
        return True
    return None


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's config or token leaks into a test."""
    for name in (
        "CHATCOMPAT_CONFIG",
        "CHATCOMPAT_STATE_DIR",
        "CHATCOMPAT_BIND",
        "CHATCOMPAT_GATEWAY_TOKEN",
        "CHATCOMPAT_GATEWAY_PASSWORD",
        "OPENCLAW_GATEWAY_TOKEN",
        "OPENCLAW_GATEWAY_PASSWORD",
        "PROMETHEUS_MULTIPROC_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def agent_log(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The file the scripted agent logs each run's start and end to (its path)."""
    path = str(tmp_path / "agent.log")
    monkeypatch.setenv("SCRIPTED_AGENT_LOG", path)
    return path


@pytest.fixture
def settings(tmp_path: t.Any) -> Settings:
    return Settings(
        state_dir=str(tmp_path),
        auth_secret=TOKEN,
        chat_completions_enabled=True,
        session_store=f"sqlite:///{tmp_path}/sessions.db",
        rate_limit=RateLimit(max_attempts=3, exempt_loopback=False),
        sse_keepalive_seconds=0.2,
        agents=(
            AgentConfig(id="main", backend="echo", default=True),
            AgentConfig(id="beta", backend="echo", system_prompt="You are beta."),
            AgentConfig(id="scripted", backend=SCRIPTED, timeout_seconds=5),
        ),
        default_agent_id="main",
    )


@pytest.fixture
def make_app(settings: Settings) -> t.Callable[..., t.Any]:
    apps = []

    def factory(**overrides: t.Any) -> t.Any:
        app = create_app(dataclasses.replace(settings, **overrides))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["chatcompat"].close()


@pytest.fixture
def app(make_app: t.Callable[..., t.Any]) -> t.Any:
    return make_app()


@pytest.fixture
def client(app: t.Any) -> t.Any:
    return app.test_client()


@pytest.fixture
def fake() -> t.Iterator[FakeUpstream]:
    """A fake OpenAI upstream of this test's own (its log holds this test's requests)."""
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def module_fake() -> t.Iterator[FakeUpstream]:
    """A fake OpenAI upstream shared by a module (for agents that stay warm across tests;
    tell requests apart with a marker, see ``chat_requests_mentioning``)."""
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def quick_turn_write_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test checks the pauses between turn-write attempts (0.2 s, then 0.4 s); they
    would add 0.6 s to every test of a write that keeps failing."""
    from chatcompat import run

    monkeypatch.setattr(run, "TURN_WRITE_PAUSE_SECONDS", 0.001)


@pytest.fixture
def store(settings: Settings) -> t.Iterator[t.Any]:
    """The session store the ``settings`` name, closed after the test."""
    from chatcompat.sessions import open_store

    opened = open_store(settings.session_store)
    yield opened
    opened.close()
