"""A tiny instance-metadata endpoint (IMDSv2) on loopback: a token for PUT /latest/api/token, then the
spot interruption notice at /latest/meta-data/spot/instance-action (404 while there is none)."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

TOKEN = "token-1"


class Imds:
    def __init__(self) -> None:
        self.notice: dict | None = None
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802
                self._answer(200, TOKEN.encode())

            def do_GET(self):  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._answer(401, b"")
                if self.path == "/latest/meta-data/spot/instance-action" and endpoint.notice:
                    return self._answer(200, json.dumps(endpoint.notice).encode())
                self._answer(404, b"")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds():
    endpoint = Imds()
    yield endpoint
    endpoint.close()
