"""The master's last good configuration: kept across reloads that fail, served by workers.

The real SIGHUP against gunicorn is in tests/live/test_reload.py.
"""

from __future__ import annotations

import json

import pytest

from chatcompat import create_app
from chatcompat import reloading
from chatcompat.config import ConfigError

TOKEN = "reload-token-0123456789"


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str, *args: object) -> None:
        self.lines.append(("info", msg % args))

    def warning(self, msg: str, *args: object) -> None:
        self.lines.append(("warning", msg % args))

    def error(self, msg: str, *args: object) -> None:
        self.lines.append(("error", msg % args))


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A config file named by CHATCOMPAT_CONFIG, and no accepted settings yet."""
    monkeypatch.setattr(reloading, "_accepted", None)
    path = tmp_path / "chatcompat.json5"
    monkeypatch.setenv("CHATCOMPAT_CONFIG", str(path))
    monkeypatch.setenv("CHATCOMPAT_STATE_DIR", str(tmp_path / "state"))
    return path


def document(*agent_ids: str, port: int = 18789) -> str:
    return json.dumps(
        {
            "gateway": {"port": port, "auth": {"token": TOKEN}},
            "agents": {"list": [{"id": agent, "backend": "echo"} for agent in agent_ids]},
        }
    )


def test_a_broken_file_is_logged_problem_by_problem_and_the_last_good_config_stays(config):
    config.write_text(document("main"))
    first = reloading.load_initial()
    config.write_text(
        json.dumps({"gateway": {"port": 0, "auth": {"token": TOKEN}}, "agents": {"list": [{}]}})
    )
    log = Log()
    assert reloading.reload(log) is first
    assert reloading.accepted() is first
    assert log.lines == [
        ("error", "chatcompat: config: agents.list[0]: 'id' is a required property"),
        ("error", "chatcompat: config: gateway.port: 0 is less than the minimum of 1"),
        (
            "error",
            "chatcompat: config: reload refused (2 problem(s)); the workers keep the last"
            " good configuration",
        ),
    ]


def test_a_good_file_is_accepted(config):
    config.write_text(document("main"))
    reloading.load_initial()
    config.write_text(document("main", "added"))
    log = Log()
    settings = reloading.reload(log)
    assert reloading.accepted() is settings
    assert [agent.id for agent in settings.agents] == ["main", "added"]
    assert log.lines == [("info", f"chatcompat: config: reloaded {config}")]


def test_a_new_listen_address_waits_for_a_restart(config):
    config.write_text(document("main"))
    reloading.load_initial()
    config.write_text(document("main", port=18790))
    log = Log()
    reloading.reload(log)
    assert log.lines[-1][0] == "warning" and "applies at the next restart" in log.lines[-1][1]


def test_a_reload_reads_the_file_the_master_started_with(config, tmp_path, monkeypatch):
    # Started on a discovered ./chatcompat.json5 that is then moved away: the reload
    # must not fall back to the built-in defaults (the endpoint disabled).
    monkeypatch.delenv("CHATCOMPAT_CONFIG")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "chatcompat.json5").write_text(document("main"))
    first = reloading.load_initial()
    (work / "chatcompat.json5").unlink()
    log = Log()
    assert reloading.reload(log) is first
    assert "config file not found" in log.lines[0][1]


def test_the_initial_load_refuses_a_broken_file(config):
    config.write_text("{gateway: {port: 0}}")
    with pytest.raises(ConfigError):
        reloading.load_initial()
    assert reloading.accepted() is None


def test_an_app_built_without_settings_serves_what_the_master_accepted(config):
    # A gunicorn worker: forked from the master after load_initial/reload, the file
    # may be broken by now.
    config.write_text(document("main", "kept"))
    reloading.load_initial()
    config.write_text("{not json")
    app = create_app()
    try:
        assert [agent.id for agent in app.extensions["chatcompat"].settings.agents] == [
            "main",
            "kept",
        ]
    finally:
        app.extensions["chatcompat"].close()
