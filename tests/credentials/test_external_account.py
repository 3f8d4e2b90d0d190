"""``credentials_file`` of a kind google-auth loads: an external account (workload identity federation).

The file's subject token is exchanged at a real security token service on
loopback (a small ``http.server``), and the exchanged token is what an
emulator that accepts only that token receives.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from kombu import Connection

from kombu_appengine.api import TASKQUEUE_SCOPE
from kombu_appengine.errors import ConfigurationError
from tests.support.helpers import MakeEmulator
from tests.support.token_service import AUDIENCE, SUBJECT_TOKEN, SUBJECT_TOKEN_TYPE, TokenService


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
    tmp_path: pathlib.Path, token_service: TokenService, access_token: str, make_emulator: MakeEmulator
):
    path = external_account_file(tmp_path, token_service.url)
    options = {"credentials_file": str(path), "project_name": "my-app"}
    emulator = make_emulator(queues=["default"], require_auth=True, accepted_tokens=[access_token])
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
