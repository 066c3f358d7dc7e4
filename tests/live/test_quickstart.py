"""The quick start end to end: ``chatcompat init`` writes a config, ``chatcompat serve``
runs it as written, and the curl commands init printed work when pasted into a shell."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys

import json5
import pytest

from chatcompat import cli
from tests.live.conftest import REPO
from tests.live.conftest import free_port
from tests.live.conftest import get_status
from tests.live.conftest import start_server
from tests.live.conftest import wait_until
from tests.test_cli import curl_lines
from tests.wire import check_completion
from tests.wire import check_response
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live


def test_init_then_serve_then_the_printed_curl_commands(tmp_path, capsys):
    port = free_port()
    path = tmp_path / "quickstart" / "chatcompat.json5"
    assert cli.main(["init", "--path", str(path), "--port", str(port)]) == 0
    commands = curl_lines(capsys.readouterr().out)
    assert len(commands) == 3  # chat JSON, chat stream, Responses JSON
    server = start_server(tmp_path / "server", workers=1, config_file=path, port=port)
    try:
        outputs = []
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, timeout=30, check=False
            )
            assert done.returncode == 0, (command, done.stderr)
            outputs.append(done.stdout)
        body = json.loads(outputs[0])
        check_completion(body)
        assert body["choices"][0]["message"]["content"] == "hi"
        chunks, frames = parse_sse(outputs[1])
        assert stream_text(chunks) == "hi" and frames[-1] == "data: [DONE]"
        response = json.loads(outputs[2])
        check_response(response)
        assert response["output"][0]["content"][0]["text"] == "hi"
    finally:
        server.stop()


def test_a_wheel_installed_with_its_declared_dependencies_serves(tmp_path):
    """``pip install .`` (a wheel, not the editable checkout) into a new venv gets every
    package the gateway imports when it serves: gunicorn's gevent worker included."""
    source = tmp_path / "source"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        origin = REPO / name.decode()
        if origin.is_file():
            target = source / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    # Installed as files in site-packages (a wheel), not a link back to the checkout.
    assert list(venv.glob("lib/python3*/site-packages/chatcompat/schemas/chat_request.json"))
    assert not (venv / "bin" / "pytest").exists()  # no dev extras came along

    port = free_port()
    config = tmp_path / "home" / "chatcompat.json5"
    work = tmp_path / "elsewhere"  # not the checkout: nothing may be imported from it
    work.mkdir()
    chatcompat = str(venv / "bin" / "chatcompat")
    subprocess.run(
        [chatcompat, "init", "--path", str(config), "--port", str(port)],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [chatcompat, "serve", "--config", str(config), "--workers", "1"],
            cwd=work,
            env={**env, "HOME": str(tmp_path / "home")},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: server.poll() is not None or _answers(port),
            timeout=60,
            what="the installed chatcompat serve to answer or exit",
        )
        assert server.poll() is None, log.read_text()
        token = json5.loads(config.read_text())["gateway"]["auth"]["token"]
        reply = chat(port, {"messages": [{"role": "user", "content": "hi"}]}, token)
        check_completion(reply)
        assert reply["choices"][0]["message"]["content"] == "hi"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        return get_status(port, "/healthz") == 200
    except OSError:
        return False


def chat(port: int, body: dict, token: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(body),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        connection.close()
