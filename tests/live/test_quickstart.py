"""The quick start end to end: ``chatcompat init`` writes a config, ``chatcompat serve``
runs it as written, and the curl commands init printed work when pasted into a shell."""

from __future__ import annotations

import json
import subprocess

import pytest

from chatcompat import cli
from tests.live.conftest import free_port
from tests.live.conftest import start_server
from tests.test_cli import curl_lines
from tests.wire import check_completion
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live


def test_init_then_serve_then_the_printed_curl_commands(tmp_path, capsys):
    port = free_port()
    path = tmp_path / "quickstart" / "chatcompat.json5"
    assert cli.main(["init", "--path", str(path), "--port", str(port)]) == 0
    commands = curl_lines(capsys.readouterr().out)
    assert len(commands) == 2
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
    finally:
        server.stop()
