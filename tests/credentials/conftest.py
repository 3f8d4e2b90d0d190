"""Fixtures of the credential tests: an environment without the developer's
credentials, an emulator that accepts only tokens the test OAuth server
issued, and files for that server's clients."""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Iterator

import pytest

from kombu_appengine.credentials import ADC_ENV
from kombu_appengine.emulator import Emulator
from tests.support.helpers import MakeEmulator, write_json
from tests.support.oauth_server import OAuthServer
from tests.support.token_service import TokenService


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """No emulator, ADC file, gcloud configuration or metadata server from the developer's machine."""
    monkeypatch.delenv("TASKQUEUE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv(ADC_ENV, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")


@pytest.fixture
def emulator(make_emulator: MakeEmulator, oauth: OAuthServer) -> Emulator:
    """An emulator with the queue ``default`` that accepts only the access tokens
    :func:`oauth` considers valid."""
    running = make_emulator(queues=["default"], require_auth=True, accepted_tokens=())
    # The live set, not a copy: a token the server expires is refused at once.
    running.api.accepted_tokens = oauth.valid_tokens
    return running


@pytest.fixture
def client_secrets(oauth: OAuthServer, tmp_path: pathlib.Path) -> str:
    """An installed client's secrets file pointing at :func:`oauth`."""
    return str(write_json(tmp_path / "client_secrets.json", oauth.client_secrets()))


@pytest.fixture
def service_account_key(oauth: OAuthServer, tmp_path: pathlib.Path) -> pathlib.Path:
    """A service-account key file that :func:`oauth` accepts the assertions of."""
    return write_json(tmp_path / "key.json", oauth.service_account_info())


@pytest.fixture
def access_token() -> str:
    """The access token :func:`token_service` gives in exchange for the subject token."""
    return "exchanged-" + secrets.token_urlsafe(16)


@pytest.fixture
def token_service(access_token: str) -> Iterator[TokenService]:
    """A security token service on loopback for external-account credentials."""
    service = TokenService(access_token)
    yield service
    service.close()
