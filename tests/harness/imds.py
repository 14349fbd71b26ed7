"""A tiny instance-metadata endpoint (IMDSv2) on loopback: a token for PUT /latest/api/token, then the
spot interruption notice at /latest/meta-data/spot/instance-action (404 while there is none) and, once a
test sets `role`, that instance profile's credentials under /latest/meta-data/iam/security-credentials/
as EC2 serves them (boto3's default credential chain reads them there)."""
from __future__ import annotations

import datetime
import http.server
import json
import threading

import pytest

TOKEN = "token-1"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"


def role_credentials() -> dict:
    """What EC2 answers for an instance profile's role: temporary keys good for the next hour."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {"Code": "Success", "LastUpdated": now.strftime(stamp), "Type": "AWS-HMAC",
            "AccessKeyId": "testing", "SecretAccessKey": "testing", "Token": "testing",
            "Expiration": (now + datetime.timedelta(hours=1)).strftime(stamp)}


class Imds:
    def __init__(self) -> None:
        self.notice: dict | None = None
        self.role: str | None = None
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802
                self._answer(200, TOKEN.encode())

            def do_GET(self):  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._answer(401, b"")
                if self.path == "/latest/meta-data/spot/instance-action" and endpoint.notice:
                    return self._answer(200, json.dumps(endpoint.notice).encode())
                if endpoint.role and self.path in (CREDENTIALS_PATH, CREDENTIALS_PATH.rstrip("/")):
                    return self._answer(200, endpoint.role.encode())
                if endpoint.role and self.path == CREDENTIALS_PATH + endpoint.role:
                    return self._answer(200, json.dumps(role_credentials()).encode())
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
