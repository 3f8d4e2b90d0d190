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

from kombu_appengine.api import CLIENT_SCOPES
from kombu_appengine.errors import AuthenticationFailed, ConfigurationError
from tests.support.helpers import MakeEmulator
from tests.support.token_service import AUDIENCE, SUBJECT_TOKEN, SUBJECT_TOKEN_TYPE, TokenService


def external_account_file(
    directory: pathlib.Path, token_url: str, credential_source: dict[str, Any] | None = None
) -> pathlib.Path:
    """An external-account file as ``gcloud iam workload-identity-pools create-cred-config`` writes it.

    Its credential source is a file holding :data:`SUBJECT_TOKEN`, unless
    ``credential_source`` says otherwise.
    """
    if credential_source is None:
        subject_token = directory / "subject-token"
        subject_token.write_text(SUBJECT_TOKEN)
        credential_source = {"file": str(subject_token)}
    path = directory / "external-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": AUDIENCE,
                "subject_token_type": SUBJECT_TOKEN_TYPE,
                "token_url": token_url,
                "credential_source": credential_source,
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
    # One exchange served every request, for the Task Queue and email scopes.
    assert len(token_service.exchanges) == 1
    (exchange,) = token_service.exchanges
    assert exchange["audience"] == AUDIENCE
    assert exchange["subject_token_type"] == SUBJECT_TOKEN_TYPE
    assert exchange["scope"] == " ".join(CLIENT_SCOPES)


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


@pytest.mark.parametrize(
    ("credential_source", "words"),
    [
        (
            {"executable": {"command": "/bin/echo token"}},
            [
                "cannot get an access token from its credential source",
                "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
            ],
        ),
        (
            {"file": "/no/such/subject-token"},
            [
                "cannot get an access token from its credential source",
                "'/no/such/subject-token' was not found",
            ],
        ),
        # google-auth would read (and close) the process's file descriptor of that number.
        ({"file": 987654}, ['its credential source must give "file" as a path, not a number']),
        (
            {"url": ["http://idp.example/token"]},
            ['its credential source must give "url" as a URL, not a list'],
        ),
    ],
)
def test_a_credential_source_that_cannot_give_a_token_is_named_not_the_token_endpoint(
    tmp_path: pathlib.Path,
    token_service: TokenService,
    make_emulator: MakeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    credential_source: dict[str, Any],
    words: list[str],
):
    monkeypatch.delenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", raising=False)
    path = external_account_file(tmp_path, token_service.url, credential_source)
    emulator = make_emulator(queues=["default"])
    options = {"api_endpoint": emulator.url, "credentials_file": str(path), "project_name": "my-app"}
    with (
        Connection(transport="kombu_appengine:Transport", transport_options=options) as conn,
        pytest.raises(ConfigurationError) as failure,
    ):
        conn.SimpleQueue("default").put({"never": "sent"})
    message = str(failure.value)
    assert message.startswith(f"credentials_file {path}: ")
    for word in words:
        assert word in message
    assert "token endpoint" not in message
    assert "pullqueue_authenticate" not in message
    assert token_service.exchanges == []
    assert emulator.requests == 0


def test_a_subject_token_the_token_service_refuses_names_the_file_and_the_refusal(
    tmp_path: pathlib.Path, token_service: TokenService, make_emulator: MakeEmulator
):
    path = external_account_file(tmp_path, token_service.url)
    (tmp_path / "subject-token").write_text("not the token the identity provider gave")
    emulator = make_emulator(queues=["default"])
    options = {"api_endpoint": emulator.url, "credentials_file": str(path), "project_name": "my-app"}
    with (
        Connection(transport="kombu_appengine:Transport", transport_options=options) as conn,
        pytest.raises(AuthenticationFailed) as failure,
    ):
        conn.SimpleQueue("default").put({"never": "sent"})
    message = str(failure.value)
    assert message.startswith(
        f"credentials_file {path}: the security token service {token_service.url} refused"
    )
    assert "invalid_grant (bad subject token)" in message
    assert len(token_service.exchanges) == 1
