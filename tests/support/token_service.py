"""A security token service (RFC 8693) on loopback, for external-account credentials."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any

#: What the identity provider gave the workload, as it sits in the credential source file.
SUBJECT_TOKEN = "subject-token-from-the-identity-provider"
SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AUDIENCE = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/oidc"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


class TokenService:
    """A security token service (RFC 8693) on loopback, giving ``access_token`` for :data:`SUBJECT_TOKEN`."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        #: The form of every exchange asked for, in order.
        self.exchanges: list[dict[str, str]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {key: values[0] for key, values in urllib.parse.parse_qs(body).items()}
                service.exchanges.append(form)
                if (
                    form.get("grant_type") != TOKEN_EXCHANGE_GRANT
                    or form.get("subject_token") != SUBJECT_TOKEN
                ):
                    self.answer(400, {"error": "invalid_grant", "error_description": "bad subject token"})
                    return
                self.answer(
                    200,
                    {
                        "access_token": service.access_token,
                        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                    },
                )

            def answer(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
