"""``credentials_file`` of a kind google-auth loads: an external account (workload identity federation).

The file's subject token is exchanged at a real security token service on
loopback (a small ``http.server``), and the exchanged token is what an
emulator that accepts only that token receives.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from kombu_appengine.api import TASKQUEUE_SCOPE
from kombu_appengine.emulator import Emulator
from kombu_appengine.errors import ConfigurationError

#: What the identity provider gave the workload, as it sits in the credential source file.
SUBJECT_TOKEN = "subject-token-from-the-identity-provider"
SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AUDIENCE = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/oidc"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"

# google-auth's generic loader warns that it must not be fed untrusted files;
# the files here are the test's own.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The load_credentials_from_file method is deprecated:DeprecationWarning"
)


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


@pytest.fixture
def access_token() -> str:
    return "exchanged-" + secrets.token_urlsafe(16)


@pytest.fixture
def token_service(access_token: str) -> Iterator[TokenService]:
    service = TokenService(access_token)
    yield service
    service.close()


def external_account_file(directory: pathlib.Path, token_url: str) -> pathlib.Path:
    """An external-account file as ``gcloud iam workload-identity-pools create-cred-config`` writes it."""
    subject_token = directory / "subject-token"
    subject_token.write_text(SUBJECT_TOKEN)
    path = directory / "external-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": AUDIENCE,
                "subject_token_type": SUBJECT_TOKEN_TYPE,
                "token_url": token_url,
                "credential_source": {"file": str(subject_token)},
            }
        )
    )
    return path


def test_an_external_account_file_signs_requests_with_the_exchanged_token(
    tmp_path: pathlib.Path, token_service: TokenService, access_token: str
):
    path = external_account_file(tmp_path, token_service.url)
    options = {"credentials_file": str(path), "project_name": "my-app"}
    with Emulator(queues=["default"], require_auth=True, accepted_tokens=[access_token]) as emulator:
        with Connection(
            transport="kombu_appengine:Transport", transport_options={"api_endpoint": emulator.url, **options}
        ) as conn:
            assert conn.transport is not None
            assert token_service.exchanges == [], "loading the file exchanges nothing yet"
            queue = conn.SimpleQueue("default")
            queue.put({"signed": "by the workload"})
            message = queue.get(timeout=10)
            assert message.payload == {"signed": "by the workload"}
            message.ack()
        assert emulator.tokens
        assert set(emulator.tokens) == {access_token}
    # One exchange served every request, for the Task Queue scope.
    assert len(token_service.exchanges) == 1
    (exchange,) = token_service.exchanges
    assert exchange["audience"] == AUDIENCE
    assert exchange["subject_token_type"] == SUBJECT_TOKEN_TYPE
    assert exchange["scope"] == TASKQUEUE_SCOPE


@pytest.mark.parametrize(
    "content",
    [
        {"type": "a_kind_nobody_knows"},
        {"type": "external_account", "audience": AUDIENCE},
        {"type": "impersonated_service_account"},
    ],
)
def test_a_file_google_auth_cannot_load_either_is_one_error_line_naming_it(
    tmp_path: pathlib.Path, content: dict[str, Any]
):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigurationError) as failure:
        Connection(
            transport="kombu_appengine:Transport",
            transport_options={"project_name": "my-app", "credentials_file": str(path)},
        ).connect()
    message = str(failure.value)
    assert message.startswith(f"credentials_file {path}: ")
    assert "google-auth cannot load it" in message
    assert "\n" not in message
