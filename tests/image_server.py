"""A real HTTP server on loopback for the image fetch tests (unit and live).

Paths::

    /png              a small PNG (image/png)
    /svg              an SVG document (image/svg+xml), no image by its bytes
    /big?n=N          N bytes of a PNG-looking body, with Content-Length
    /stream?n=N       N bytes without Content-Length (the connection's end ends it)
    /slow?s=S         waits S seconds, then the PNG
    /to?u=URL         302 to URL
    /loop             302 to /loop, forever
    /status?c=C       answers status C
    /host             the PNG, and records the Host header it got
    /drip-headers?s=S the status line and headers one byte every 0.1 s, for S seconds
    /drip-chunks?s=S  a chunked body whose first chunk-size line comes one byte every
                      0.1 s, for S seconds
"""

from __future__ import annotations

import base64
import http.server
import threading
import time
import typing as t
import urllib.parse

# A 1x1 transparent PNG (made with zlib and struct).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


class ImageServer:
    """A threaded HTTP/1.0 server on ``host`` (a free port); records the paths asked."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        self.hosts: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: t.Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                owner.requests.append(self.path)
                owner.hosts.append(self.headers.get("Host", ""))
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path in ("/png", "/host"):
                    self._send(200, "image/png", PNG)
                elif url.path == "/svg":
                    self._send(200, "image/svg+xml", SVG)
                elif url.path == "/big":
                    self._send(200, "image/png", PNG + b"\0" * int(query["n"]))
                elif url.path == "/stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    self.wfile.write(PNG + b"\0" * int(query["n"]))
                elif url.path == "/slow":
                    time.sleep(float(query["s"]))
                    self._send(200, "image/png", PNG)
                elif url.path == "/to":
                    self._redirect(query["u"])
                elif url.path == "/loop":
                    self._redirect("/loop")
                elif url.path == "/drip-headers":
                    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 1000
                    self._drip(head, float(query["s"]))
                elif url.path == "/drip-chunks":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    self._drip(b"1;" + b"x" * 1000, float(query["s"]))  # a size, then its extension
                elif url.path == "/status":
                    self._send(int(query["c"]), "text/plain", b"no")
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drip(self, data: bytes, seconds: float) -> None:
                # One byte every 0.1 s: each read gets something long before any
                # per-read timeout, so only a deadline over all reads stops the client.
                until = time.monotonic() + seconds
                try:
                    for byte in data:
                        if time.monotonic() >= until:
                            break
                        self.wfile.write(bytes([byte]))
                        time.sleep(0.1)
                except OSError:
                    pass  # the client gave up: the point of the test
                self.close_connection = True

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
