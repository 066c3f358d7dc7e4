"""CORS in a real browser: headless Chromium (Debian's ``chromium``) loads a page served
from another loopback port, whose script calls the gateway with ``fetch()`` (a
preflighted POST: ``Authorization``, JSON, ``x-openclaw-*`` headers) and reports what it
could read to the page's own server. A page on an origin that is not listed cannot
call at all: the browser refuses after the preflight, and the agent never runs.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import typing as t
import urllib.parse
import uuid

import pytest

from tests.live.conftest import TOKEN
from tests.live.conftest import free_port
from tests.live.conftest import wait_until

pytestmark = pytest.mark.live

BROWSER_SECONDS = 45.0

# The page's script: a JSON call, a streamed call and a call with a wrong token, each
# reported with what the page can read (status, body, exposed headers), then POSTed
# to the page's own server (same origin, no CORS needed).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head><body><script>
const query = new URLSearchParams(location.search);
const GATEWAY = query.get("gateway"), MARK = query.get("mark");
async function call(body, token) {
  const response = await fetch(GATEWAY + "/v1/chat/completions", {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json",
              "x-openclaw-session-key": "browser-" + MARK, "Idempotency-Key": "idem-" + MARK
                + (body.stream ? "-s" : "") + token.length},
    body: JSON.stringify(body),
  });
  return {status: response.status, body: await response.text(),
          sessionKey: response.headers.get("x-openclaw-session-key"),
          requestId: response.headers.get("x-request-id"),
          contentType: response.headers.get("content-type")};
}
async function main() {
  const out = {};
  const body = {model: "openclaw/scripted", messages: [{role: "user", content: "hi " + MARK}]};
  for (const [name, request, token] of [["json", body, %(token)s],
      ["stream", {...body, stream: true}, %(token)s], ["unauthorized", body, "wrong"]]) {
    try { out[name] = await call(request, token); }
    catch (error) { out[name] = {error: error.name + ": " + error.message}; }
  }
  await fetch("/result", {method: "POST", body: JSON.stringify(out)});
}
main();
</script></body></html>
"""


class PageServer:
    """Serves the page on its own loopback port and collects what it reports."""

    def __init__(self) -> None:
        self.results: queue.Queue[dict] = queue.Queue()
        page = PAGE % {"token": json.dumps(TOKEN)}
        results = self.results

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                data = page.encode() if self.path.startswith("/?") else b""
                self.send_response(200 if data else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                results.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: t.Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required under CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    return found


def report_of(page: PageServer, gateway: str, mark: str, profile: str) -> dict:
    """Open the page in headless Chromium and return what its script reported."""
    url = f"{page.origin}/?{urllib.parse.urlencode({'gateway': gateway, 'mark': mark})}"
    # No sandbox (CI runs as root), no /dev/shm (small in containers).
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-dev-shm-usage",
            "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", url]  # fmt: skip
    # Its own process group: the browser's helper processes end with it.
    browser = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return page.results.get(timeout=BROWSER_SECONDS)
    except queue.Empty:
        pytest.fail(f"the page reported nothing within {BROWSER_SECONDS:g} s")
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)


def preflights(server: t.Any) -> list[int]:
    """The statuses of the OPTIONS requests in the gateway's request log, in order."""
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    return [line["status"] for line in lines
            if line.get("event") == "request" and line.get("method") == "OPTIONS"]  # fmt: skip


@pytest.fixture
def pages() -> t.Iterator[tuple[PageServer, PageServer]]:
    """Two pages on two more loopback ports: one listed, one not."""
    listed, unlisted = PageServer(), PageServer()
    yield listed, unlisted
    listed.close()
    unlisted.close()


def test_only_a_listed_origin_calls_the_api_from_the_browser(make_server, pages, tmp_path):
    listed, unlisted = pages
    cors = {"allowOrigins": [listed.origin], "maxAgeSeconds": 0}  # every call preflighted
    server = make_server(workers=1, overrides={"gateway": {"http": {"cors": cors}}})
    gateway = server.url("")
    mark = uuid.uuid4().hex[:8]
    report = report_of(listed, gateway, mark, str(tmp_path / "profile-listed"))

    json_call = report["json"]
    assert json_call["status"] == 200, report
    assert json.loads(json_call["body"])["choices"][0]["message"]["content"] == f"hi {mark}"
    # Exposed: the page can read the session key and the request id.
    assert json_call["sessionKey"] == f"agent:scripted:browser-{mark}"
    assert json_call["requestId"]
    stream = report["stream"]
    assert stream["status"] == 200 and stream["contentType"].startswith("text/event-stream")
    frames = stream["body"].strip().split("\n\n")
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == f"hi {mark}"
    # An error is readable too: the page can tell a wrong token from a network failure.
    refused = report["unauthorized"]
    assert refused["status"] == 401
    assert json.loads(refused["body"])["error"]["code"] == "invalid_api_key"
    runs = [line for line in server.runs() if line["event"] == "start"]
    assert len([line for line in runs if line["session"].endswith(f"browser-{mark}")]) == 2
    # The browser asked first, and was answered before authentication.
    wait_until(lambda: preflights(server) == [204, 204, 204], 5, "three preflights logged")

    # The same page from an origin that is not listed: the preflight gets no CORS
    # headers, so the browser never sends the POST and the page learns nothing.
    other = uuid.uuid4().hex[:8]
    report = report_of(unlisted, gateway, other, str(tmp_path / "profile-unlisted"))
    for name in ("json", "stream", "unauthorized"):
        assert report[name] == {"error": "TypeError: Failed to fetch"}, report
    assert not [line for line in server.runs() if other in json.dumps(line)]
    # Asked, refused (no CORS headers), nothing sent.
    wait_until(lambda: preflights(server)[3:] == [405, 405, 405], 5, "three refused preflights")
