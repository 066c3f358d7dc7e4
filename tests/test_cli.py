"""The ``chatcompat`` command: init, check, sessions (in-process) and serve (subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import subprocess
import sys

import json5
import pytest

from chatcompat import cli
from chatcompat.config import load_settings
from chatcompat.sessions import SQLiteStore
from chatcompat.sessions import StoredResponse

CHATCOMPAT = pathlib.Path(sys.executable).with_name("chatcompat")
URL = "http://127.0.0.1:18789/v1/chat/completions"


@pytest.fixture
def state(tmp_path, monkeypatch):
    """An empty state directory and working directory: no developer config is found."""
    state_dir = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("CHATCOMPAT_STATE_DIR", str(state_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    return state_dir


def run(argv, capsys):
    """``chatcompat argv`` in-process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def token_of(path) -> str:
    return json5.loads(pathlib.Path(path).read_text())["gateway"]["auth"]["token"]


def curl_lines(output: str) -> list[str]:
    """The printed curl commands, each with its backslash-continued lines joined."""
    commands, current = [], None
    for line in output.splitlines():
        line = line.strip()
        if current is not None:
            current += " " + line
        elif line.startswith("curl "):
            current = line
        if current is not None and not current.endswith("\\"):
            commands.append(current)
            current = None
        elif current is not None:
            current = current[:-1].rstrip()
    return commands


# -- init ------------------------------------------------------------------------------------


def test_init_writes_a_private_config_with_a_fresh_token(state, capsys):
    status, out, _ = run(["init"], capsys)
    assert status == 0
    path = state / "chatcompat.json5"
    assert f"Wrote {path}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = token_of(path)
    assert len(token) >= 32
    lines = curl_lines(out)
    assert len(lines) == 3  # chat JSON, chat stream, Responses
    for line in lines[:2]:
        assert URL in line and f"Authorization: Bearer {token}" in line
    assert any('"stream": true' in line for line in lines)
    assert "/v1/responses " in lines[2] and f"Authorization: Bearer {token}" in lines[2]
    assert load_settings(str(path)).responses_enabled
    assert f"chatcompat serve --config {path}" in out

    status, out, _ = run(["init", "--force"], capsys)
    assert status == 0
    fresh = token_of(path)
    assert fresh != token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(f"Bearer {fresh}" in line for line in curl_lines(out))


def test_init_keeps_an_existing_file_without_force(state, capsys):
    assert run(["init"], capsys)[0] == 0
    path = state / "chatcompat.json5"
    before = path.read_bytes()
    status, out, _ = run(["init"], capsys)
    assert status == 0
    assert "Keeping the existing config" in out and "--force" in out
    assert path.read_bytes() == before
    assert all(f"Bearer {token_of(path)}" in line for line in curl_lines(out))


def test_init_with_path_and_port(state, tmp_path, capsys):
    path = tmp_path / "new" / "dir" / "gateway.json5"
    status, out, _ = run(["init", "--path", str(path), "--port", "19999"], capsys)
    assert status == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not (state / "chatcompat.json5").exists()
    lines = curl_lines(out)
    assert lines and all("http://127.0.0.1:19999/v1/" in line for line in lines)
    assert load_settings(str(path)).port == 19999


def test_init_config_passes_check(state, capsys):
    assert run(["init"], capsys)[0] == 0
    path = state / "chatcompat.json5"
    status, out, err = run(["check", "--config", str(path)], capsys)
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == f"ok: {path}"
    assert "/v1/chat/completions enabled" in out
    assert "auth token" in out and "main (echo)" in out
    assert token_of(path) not in out  # check never prints the secret
    settings = load_settings(str(path))
    assert settings.chat_completions_enabled and settings.auth_secret == token_of(path)
    # Found without --config too: init writes where discovery looks.
    status, out, _ = run(["check"], capsys)
    assert status == 0 and out.splitlines()[0] == f"ok: {path}"


# -- check -----------------------------------------------------------------------------------


def test_check_without_a_config_file_needs_a_token_from_the_environment(state, capsys, monkeypatch):
    status, out, err = run(["check"], capsys)
    assert status == 2 and out == ""
    assert err.startswith("chatcompat: config: gateway.auth.token: token mode needs a token")
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", "from-the-environment-0123")
    status, out, _ = run(["check"], capsys)
    assert status == 0
    assert out.splitlines()[0] == "ok: no config file (built-in defaults)"
    assert "/v1/chat/completions DISABLED" in out


def test_check_lists_every_problem_with_its_key_path_and_exits_2(state, tmp_path, capsys):
    path = tmp_path / "broken.json5"
    path.write_text(
        """{
          gateway: {
            port: "eighty",
            auth: { mode: "tokn", mdoe: "x", token: "t" },
          },
          agents: { list: [{ id: "Bad Id!", backend: "echo" }] },
          sessions: { historyLimit: -1 },
        }"""
    )
    status, out, err = run(["check", "--config", str(path)], capsys)
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith("chatcompat: config: ") for line in lines), lines
    problems = [line[len("chatcompat: config: ") :] for line in lines]
    expected_paths = [
        "gateway.port:",
        "gateway.auth.mode:",
        "gateway.auth.mdoe:",
        "agents.list[0].id:",
        "sessions.historyLimit:",
    ]
    for key_path in expected_paths:
        assert sum(p.startswith(key_path) for p in problems) == 1, (key_path, problems)
    assert len(problems) == len(expected_paths), problems
    assert any("'tokn' is not one of" in p for p in problems)


def test_check_asks_the_sentinels_and_says_when_none_answers(state, tmp_path, capsys):
    # Port 1: nothing listens there, so the sentinels refuse at once.
    url = "redis+sentinel://:hunter2-secret@127.0.0.1:1,127.0.0.1:1/mymaster/0"
    path = tmp_path / "sentinel.json5"
    path.write_text(
        json.dumps(
            {
                "gateway": {"auth": {"token": "a-token-of-some-length"}},
                "sessions": {"store": url + "?sentinel_password=s3cret-sentinel"},
            }
        )
    )
    status, out, err = run(["check", "--config", str(path)], capsys)
    assert status == 1
    assert "sessions    redis+sentinel://<redacted>@127.0.0.1:1,127.0.0.1:1/mymaster/0" in out
    assert "sentinel_password=<redacted>" in out
    assert err.startswith("chatcompat: sessions.store: the session store redis+sentinel://")
    assert "unavailable" in err and "MasterNotFoundError" in err
    for secret in ("hunter2", "s3cret"):
        assert secret not in out + err


def test_check_with_a_missing_file_exits_2(state, tmp_path, capsys):
    status, _, err = run(["check", "--config", str(tmp_path / "absent.json5")], capsys)
    assert status == 2
    assert "config file not found" in err


def test_no_command_prints_help_and_exits_2(capsys):
    status, out, _ = run([], capsys)
    assert status == 2
    assert "init" in out and "serve" in out and "sessions" in out


# -- sessions --------------------------------------------------------------------------------


@pytest.fixture
def store_config(tmp_path, state, make_app):
    """A config file and an app sharing one SQLite store, with turns written through
    the app: two on a header key, one for a user."""
    path = tmp_path / "sessions.json5"
    path.write_text(
        json.dumps(
            {
                "gateway": {"auth": {"token": "x" * 20}},
                "agents": {"list": [{"id": "main", "backend": "echo"}]},
                "sessions": {"store": f"sqlite:///{tmp_path}/sessions.db"},
            }
        )
    )
    client = make_app().test_client()
    auth = {"Authorization": "Bearer test-token-0123456789"}
    for text in ("first question", "second question"):
        response = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": text}]},
            headers={**auth, "x-openclaw-session-key": "cli-chat"},
        )
        assert response.status_code == 200
    response = client.post(
        "/v1/chat/completions",
        json={"user": "Bob", "messages": [{"role": "user", "content": "hello"}]},
        headers=auth,
    )
    assert response.status_code == 200
    return path


def test_sessions_list_show_delete(store_config, capsys):
    config = ["sessions", "--config", str(store_config)]
    status, out, _ = run([*config, "list"], capsys)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "AGENT", "OWNER", "TURNS", "UPDATED", "EXPIRES"]
    listed = {row.split()[0]: row.split()[1:4] for row in rows}
    assert listed == {
        "agent:main:cli-chat": ["main", "operator", "2"],
        "agent:main:openai-user:bob": ["main", "operator", "1"],
    }

    status, out, _ = run([*config, "show", "agent:main:cli-chat"], capsys)
    assert status == 0
    shown = json.loads(out)
    assert shown["key"] == "agent:main:cli-chat"
    assert shown["agent"] == "main" and shown["sticky"] is True
    assert shown["owner"] == "operator"
    assert [turn["messages"] for turn in shown["turns"]] == [
        [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first question"},
        ],
        [
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second question"},
        ],
    ]

    assert shown["responses"] == []

    status, out, _ = run([*config, "delete", "agent:main:cli-chat"], capsys)
    assert (status, out.strip()) == (0, "deleted agent:main:cli-chat")
    status, _, err = run([*config, "show", "agent:main:cli-chat"], capsys)
    assert status == 1 and "no session 'agent:main:cli-chat'" in err
    status, _, err = run([*config, "delete", "agent:main:cli-chat"], capsys)
    assert status == 1 and "no session" in err
    status, out, _ = run([*config, "list"], capsys)
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["agent:main:openai-user:bob"]


def test_sessions_show_lists_stored_responses(store_config, tmp_path, capsys):
    with SQLiteStore(str(tmp_path / "sessions.db")) as store:
        for n in (1, 2):
            store.append_turn(
                "agent:main:cli-chat",
                "main",
                [{"role": "user", "content": f"q{n}"}],
                sticky=True,
                ttl_seconds=600,
                response=StoredResponse(f"resp_{n}", "key", {"id": f"resp_{n}"}, []),
            )
    status, out, _ = run(
        ["sessions", "--config", str(store_config), "show", "agent:main:cli-chat"], capsys
    )
    assert status == 0
    assert json.loads(out)["responses"] == ["resp_1", "resp_2"]


def test_sessions_list_limit_and_empty_store(store_config, tmp_path, capsys):
    argv = ["sessions", "--config", str(store_config), "list", "--limit", "1"]
    status, out, _ = run(argv, capsys)
    assert status == 0 and len(out.splitlines()) == 2
    empty = tmp_path / "empty.json5"
    empty.write_text(
        json.dumps(
            {
                "gateway": {"auth": {"token": "x" * 20}},
                "sessions": {"store": f"sqlite:///{tmp_path}/other/empty.db"},
            }
        )
    )
    status, out, _ = run(["sessions", "--config", str(empty), "list"], capsys)
    assert (status, out.strip()) == (0, "no sessions")


# -- serve -----------------------------------------------------------------------------------


def _serve(argv, tmp_path):
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CHATCOMPAT_", "OPENCLAW_", "GUNICORN_"))
    }
    env["CHATCOMPAT_STATE_DIR"] = str(tmp_path / "state")
    return subprocess.run(
        [str(CHATCOMPAT), "serve", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=env,
        check=False,
    )


@pytest.mark.live
def test_serve_refuses_a_bad_config_before_gunicorn_starts(tmp_path):
    path = tmp_path / "bad.json5"
    path.write_text('{ gateway: { auth: { mode: "tokn" }, port: 0 } }')
    done = _serve(["--config", str(path), "--bind", "127.0.0.1:1"], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any(line.startswith("chatcompat: config: gateway.auth.mode: 'tokn'") for line in lines)
    assert any(line.startswith("chatcompat: config: gateway.port:") for line in lines)
    assert "gunicorn" not in (done.stdout + done.stderr).lower()


@pytest.mark.live
def test_serve_refuses_token_mode_without_a_token(tmp_path):
    path = tmp_path / "notoken.json5"
    path.write_text("{ gateway: { http: { endpoints: { chatCompletions: { enabled: true } } } } }")
    done = _serve(["--config", str(path)], tmp_path)
    assert done.returncode == 2
    assert "chatcompat: config: gateway.auth.token: token mode needs a token" in done.stderr
    assert "Starting gunicorn" not in done.stderr


@pytest.mark.live
def test_serve_refuses_a_bad_bind(tmp_path):
    path = tmp_path / "ok.json5"
    path.write_text('{ gateway: { auth: { token: "abcdefghijklmnopqrstuvwxyz" } } }')
    done = _serve(["--config", str(path), "--bind", "127.0.0.1:notaport"], tmp_path)
    assert done.returncode == 2
    assert "chatcompat: config: CHATCOMPAT_BIND:" in done.stderr
    assert "Starting gunicorn" not in done.stderr


def test_check_never_prints_the_store_password(state, tmp_path, capsys):
    path = tmp_path / "redis.json5"
    path.write_text(
        '{gateway: {auth: {token: "t"}}, sessions: {store: "redis://:S3cretPw@127.0.0.1:6379/0"}}'
    )
    status, out, err = run(["check", "--config", str(path)], capsys)
    assert status == 0
    assert "redis://<redacted>@127.0.0.1:6379/0" in out
    assert "S3cretPw" not in out + err


# -- keys ------------------------------------------------------------------------------

COMMENTED = """\
// my gateway
{
  gateway: {
    auth: {
      mode: "token", // the operator's
      token: "operator-token-0123456789",
      /* keys go here */
    },
    http: { endpoints: { chatCompletions: { enabled: true } } },
  },
  agents: {
    list: [
      { id: "main", default: true, backend: "echo" }, // the default
      { id: "beta", backend: "echo" },
    ],
  },
}
"""


def test_keys_add_keeps_comments_and_writes_only_the_hash(tmp_path, state, capsys):
    path = tmp_path / "gw.json5"
    path.write_text(COMMENTED)
    path.chmod(0o600)
    config = ["keys", "--config", str(path)]
    status, out, err = run([*config, "add", "web", "--agents", "main"], capsys)
    assert status == 0, err
    token = out.splitlines()[-1].strip()
    status, out, _ = run(
        [
            *config,
            "add",
            "bot",
            "--agents",
            "beta",
            "--scopes",
            "chat",
            "--requests-per-minute",
            "100",
        ],
        capsys,
    )
    assert status == 0
    bot_token = out.splitlines()[-1].strip()
    text = path.read_text()
    for comment in ("// my gateway", "// the operator's", "/* keys go here */", "// the default"):
        assert comment in text
    assert token not in text and bot_token not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load_settings(str(path))
    web, bot = settings.api_keys
    assert web.token_sha256 == hashlib.sha256(token.encode()).digest()
    assert (web.agents, bot.agents) == (frozenset({"main"}), frozenset({"beta"}))
    assert bot.scopes == frozenset({"chat"}) and bot.limits.requests_per_minute == 100
    status, out, _ = run(["check", "--config", str(path)], capsys)
    assert status == 0 and "  keys        web, bot" in out and token not in out
    status, out, _ = run([*config, "list"], capsys)
    assert status == 0 and token not in out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["web", "bot"]
    assert rows[1][2:] == ["beta", "chat", "rpm=100"]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["add", "web"], "duplicate key id 'web'"),
        (["add", "other", "--agents", "gamma"], "unknown agent 'gamma'"),
        (["add", "Bad Id"], "not a valid key id"),
        (["add", "x", "--scopes", "admin"], "'admin' is not one of"),
    ],
)
def test_keys_add_refuses_a_key_the_config_would_refuse(tmp_path, state, capsys, argv, problem):
    path = tmp_path / "gw.json5"
    path.write_text(COMMENTED)
    assert run(["keys", "--config", str(path), "add", "web"], capsys)[0] == 0
    before = path.read_text()
    status, _, err = run(["keys", "--config", str(path), *argv], capsys)
    assert status == 2 and problem in err and "was not changed" in err
    assert path.read_text() == before


def test_keys_add_needs_a_config_file(state, capsys):
    status, _, err = run(["keys", "add", "web"], capsys)
    assert status == 2 and "chatcompat init" in err
