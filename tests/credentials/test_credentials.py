"""Every credential source, against a real OAuth 2.0 server
(:mod:`tests.support.oauth_server`) and an emulator that accepts exactly the
access tokens that server considers valid: the transport must send the token
the server issued, refresh it when it expires, and write the new one back
where it came from."""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import stat
import subprocess
import sys
import threading
from typing import Any, Callable

import google.oauth2.credentials
import google_auth_httplib2
import httplib2
import pytest
from kombu import Connection
from oauth2client.client import OAuth2Credentials
from oauth2client.file import Storage

from kombu_appengine.client import TaskQueueClient, root_url_of
from kombu_appengine.credentials import (
    ADC_ENV,
    MAX_CREDENTIALS_FILE_BYTES,
    credentials_from_file,
    load_credentials,
    write_private_file,
)
from kombu_appengine.emulator import Emulator
from kombu_appengine.errors import AuthenticationFailed, ConfigurationError
from tests.support import transport
from tests.support.helpers import MakeEmulator, write_json
from tests.support.oauth_server import AuthenticateRun, OAuthServer, consent

#: The project the tests' connections name.
PROJECT = "test-project"
#: The one queue of the tests' emulator (the ``emulator`` fixture of this directory).
QUEUE = "default"


def utcnow() -> datetime.datetime:
    """Now, as oauth2client and google-auth keep expiries: naive UTC."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def connect(emulator: Emulator, **options: Any) -> Connection:
    """A kombu connection to ``emulator`` for :data:`PROJECT`."""
    return transport.connect(emulator, project_name=PROJECT, **options)


def round_trip(connection: Connection) -> None:
    """Publish, consume and acknowledge one message: several signed requests."""
    with connection.SimpleQueue(QUEUE) as queue:
        queue.put({"hello": "world"})
        message = queue.get(timeout=10)
        assert message.payload == {"hello": "world"}
        message.ack()


def use(emulator: Emulator, **options: Any) -> None:
    with connect(emulator, **options) as connection:
        round_trip(connection)


def sent_since(emulator: Emulator, start: int) -> set:
    return set(emulator.tokens[start:])


def authenticated_file(oauth: OAuthServer, path: pathlib.Path) -> pathlib.Path:
    """What pullqueue_authenticate writes after consent, without the browser round."""
    return oauth.write_credentials_file(path)


def expire_stored_token(oauth: OAuthServer, path: pathlib.Path) -> str:
    """Let the stored access token's lifetime pass: in the file, and at the server."""
    document = json.loads(path.read_text())
    past = utcnow() - datetime.timedelta(minutes=1)
    if "_module" in document:
        token, document["token_expiry"] = document["access_token"], past.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        token, document["expiry"] = document["token"], past.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(document))
    oauth.expire(token)
    return token


def stored_token(path: pathlib.Path) -> str:
    document = json.loads(path.read_text())
    return document["access_token"] if "_module" in document else document["token"]


# -- the file pullqueue_authenticate writes, and oauth2client storage ------------


@pytest.mark.slow
def test_file_written_by_pullqueue_authenticate_signs_the_transport(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    secrets_path = write_json(tmp_path / "client_secrets.json", oauth.client_secrets())
    target = tmp_path / "credentials"
    run = AuthenticateRun(str(secrets_path), str(target), "--noauth_local_webserver")
    status, _, stderr = run.finish(consent(run.authorization_url()))
    assert status == 0, stderr

    use(emulator, credentials_file=str(target))
    assert set(emulator.tokens) == {oauth.issued[0]}
    assert oauth.grants == ["authorization_code"]


def test_credentials_file_of_pullqueue_authenticate_refreshes_and_writes_back(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    use(emulator, credentials_file=str(path))
    assert set(emulator.tokens) == {oauth.issued[0]}

    expired = expire_stored_token(oauth, path)
    start = len(emulator.tokens)
    use(emulator, credentials_file=str(path))
    refreshed = oauth.issued[-1]
    assert refreshed != expired
    assert sent_since(emulator, start) == {refreshed}
    assert oauth.grants == ["refresh_token"]
    assert Storage(str(path)).get().access_token == refreshed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    start = len(emulator.tokens)
    use(emulator, credentials_file=str(path))
    assert sent_since(emulator, start) == {refreshed}
    assert oauth.grants == ["refresh_token"], "the written-back token was not used at the next start"


def hold_and_close(
    emulator: Emulator, path: pathlib.Path, before_close: Callable[[], None] = lambda: None
) -> None:
    """Lease five tasks, take one, and close: the batch calls that give them back."""
    with connect(emulator, credentials_file=str(path), num_tasks=5) as connection:
        queue = connection.SimpleQueue(QUEUE)
        for number in range(5):
            queue.put({"n": number})
        queue.get(timeout=10)
        before_close()
    tasks = emulator.service.list_tasks(PROJECT, QUEUE)["items"]
    assert [task["leaseTimestamp"] for task in tasks] == ["0"] * 5, "every lease was given back"


def test_batch_calls_do_not_refresh_valid_credentials(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    before = path.read_text()
    hold_and_close(emulator, path)
    assert oauth.grants == [], "a valid token was refreshed"
    assert set(emulator.tokens) == {oauth.issued[0]}
    assert path.read_text() == before


def test_a_batch_refused_for_its_token_is_sent_again_with_a_fresh_one(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    # Revoked at the server while still fresh for the client.
    hold_and_close(emulator, path, before_close=lambda: oauth.expire(oauth.issued[0]))
    assert oauth.grants == ["refresh_token"]
    assert Storage(str(path)).get().access_token == oauth.issued[-1] != oauth.issued[0]


def test_credentials_storage_refreshes_and_writes_back(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    use(emulator, credentials_storage=Storage(str(path)))
    assert set(emulator.tokens) == {oauth.issued[0]}

    expire_stored_token(oauth, path)
    start = len(emulator.tokens)
    use(emulator, credentials_storage=Storage(str(path)))
    assert sent_since(emulator, start) == {oauth.issued[-1]}
    assert Storage(str(path)).get().access_token == oauth.issued[-1]


def test_token_refused_while_running_is_refreshed_and_the_request_retried(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    with connect(emulator, credentials_file=str(path)) as connection:
        round_trip(connection)
        first = oauth.issued[0]
        oauth.expire(first)  # the service now answers 401 to it
        start = len(emulator.tokens)
        round_trip(connection)
    refreshed = oauth.issued[-1]
    assert emulator.tokens[start] == first
    assert sent_since(emulator, start + 1) == {refreshed}
    assert stored_token(path) == refreshed


# -- a ready credentials object ---------------------------------------------------


def test_google_auth_credentials_object(oauth: OAuthServer, emulator: Emulator) -> None:
    answer = oauth.issue_user_tokens()
    oauth.expire(answer["access_token"])
    credentials = google.oauth2.credentials.Credentials(
        None,
        refresh_token=answer["refresh_token"],
        token_uri=oauth.token_uri,
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
    )
    use(emulator, credentials=credentials)
    assert set(emulator.tokens) == {oauth.issued[-1]}
    assert credentials.token == oauth.issued[-1]


def test_oauth2client_credentials_object(oauth: OAuthServer, emulator: Emulator) -> None:
    answer = oauth.issue_user_tokens()
    credentials = OAuth2Credentials(
        answer["access_token"],
        oauth.client_id,
        oauth.client_secret,
        answer["refresh_token"],
        utcnow() + datetime.timedelta(hours=1),
        oauth.token_uri,
        None,
    )
    use(emulator, credentials=credentials)
    assert set(emulator.tokens) == {answer["access_token"]}
    assert oauth.grants == []


def test_oauth2client_credentials_object_past_expiry_is_refreshed_before_sending(
    oauth: OAuthServer, emulator: Emulator
) -> None:
    answer = oauth.issue_user_tokens()
    oauth.expire(answer["access_token"])
    credentials = OAuth2Credentials(
        answer["access_token"],
        oauth.client_id,
        oauth.client_secret,
        answer["refresh_token"],
        utcnow() - datetime.timedelta(minutes=1),
        oauth.token_uri,
        None,
    )
    use(emulator, credentials=credentials)
    assert set(emulator.tokens) == {oauth.issued[-1]}, "an expired token was sent"
    assert credentials.access_token == oauth.issued[-1]


# -- authorized-user files ---------------------------------------------------------


def test_authorized_user_file_gets_the_refreshed_token_written_back(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    info = oauth.authorized_user_info()
    info["quota_project_id"] = "billing-project"
    path = write_json(tmp_path / "adc.json", info, mode=0o640)
    use(emulator, credentials_file=str(path))
    assert set(emulator.tokens) == {oauth.issued[-1]}
    stored = json.loads(path.read_text())
    assert stored["token"] == oauth.issued[-1]
    assert {key: stored[key] for key in info} == info, "other fields were changed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    grants = len(oauth.grants)
    start = len(emulator.tokens)
    use(emulator, credentials_file=str(path))
    assert sent_since(emulator, start) == {stored["token"]}
    assert len(oauth.grants) == grants

    expire_stored_token(oauth, path)
    start = len(emulator.tokens)
    use(emulator, credentials_file=str(path))
    assert sent_since(emulator, start) == {oauth.issued[-1]}
    assert stored_token(path) == oauth.issued[-1]


def test_a_token_another_process_wrote_is_used_instead_of_refreshing(
    oauth: OAuthServer, tmp_path: pathlib.Path
) -> None:
    path = write_json(tmp_path / "adc.json", oauth.authorized_user_info())
    first, second = credentials_from_file(str(path)), credentials_from_file(str(path))
    request = google_auth_httplib2.Request(httplib2.Http())
    first.refresh(request)
    second.refresh(request)
    assert second.token == first.token == stored_token(path)
    assert oauth.grants == ["refresh_token"]


#: Uses the transport in a process that may not write to files (as with a
#: read-only secret mount): RLIMIT_FSIZE 0 refuses every write, even root's.
NO_WRITES_ROUND_TRIP = """
import logging, resource, signal, sys
from kombu import Connection
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
logging.basicConfig(level=logging.WARNING)
url, project, queue, path = sys.argv[1:]
with Connection(transport="kombu_appengine:Transport", transport_options={
        "project_name": project, "api_endpoint": url, "credentials_file": path}) as connection:
    with connection.SimpleQueue(queue) as simple:
        simple.put({"hello": "world"})
        simple.get(timeout=10).ack()
"""


@pytest.mark.slow
def test_an_unwritable_authorized_user_file_costs_only_a_refresh(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = write_json(tmp_path / "adc.json", oauth.authorized_user_info(), mode=0o400)
    before = path.read_text()
    result = subprocess.run(
        [sys.executable, "-c", NO_WRITES_ROUND_TRIP, emulator.url, PROJECT, QUEUE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(emulator.tokens) == {oauth.issued[-1]}
    assert path.read_text() == before
    assert "could not write the refreshed access token back" in result.stderr


# -- service-account keys ----------------------------------------------------------


def test_service_account_key(
    oauth: OAuthServer, emulator: Emulator, service_account_key: pathlib.Path
) -> None:
    before = service_account_key.read_bytes()
    use(emulator, credentials_file=str(service_account_key))
    assert set(emulator.tokens) == {oauth.issued[-1]}
    assert oauth.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]

    with connect(emulator, credentials_file=str(service_account_key)) as connection:
        round_trip(connection)
        oauth.expire(oauth.issued[-1])
        start = len(emulator.tokens)
        round_trip(connection)
    assert emulator.tokens[-1] == oauth.issued[-1]
    assert oauth.issued[-1] in sent_since(emulator, start)
    assert service_account_key.read_bytes() == before, "a service-account key was written to"


# -- Application Default Credentials -----------------------------------------------


def adc_client(emulator: Emulator) -> TaskQueueClient:
    """A client signing with the credentials the transport uses when no option names any."""
    return TaskQueueClient(PROJECT, root_url_of(emulator.url), load_credentials())


def test_adc_authorized_user_file(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(tmp_path / "adc.json", oauth.authorized_user_info())
    monkeypatch.setenv(ADC_ENV, str(path))
    assert adc_client(emulator).get_queue(QUEUE)["id"] == QUEUE
    assert set(emulator.tokens) == {oauth.issued[-1]}
    assert stored_token(path) == oauth.issued[-1]

    expire_stored_token(oauth, path)
    start = len(emulator.tokens)
    adc_client(emulator).get_queue(QUEUE)
    assert sent_since(emulator, start) == {oauth.issued[-1]}
    assert stored_token(path) == oauth.issued[-1]


def test_adc_service_account_key(
    oauth: OAuthServer, emulator: Emulator, service_account_key: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADC_ENV, str(service_account_key))
    adc_client(emulator).get_queue(QUEUE)
    assert set(emulator.tokens) == {oauth.issued[-1]}
    assert oauth.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


def test_the_emulator_needs_no_credentials(
    make_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_emulator = make_emulator(queues=[QUEUE])
    use(open_emulator)
    monkeypatch.setenv("TASKQUEUE_EMULATOR_HOST", open_emulator.host)
    with Connection(transport="kombu_appengine:Transport") as connection:
        round_trip(connection)
    assert open_emulator.tokens == []


# -- failures ------------------------------------------------------------------------


def test_refused_refresh_is_an_authentication_error(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    oauth.revoke_refresh_token(oauth.refresh_tokens_issued[-1])
    expire_stored_token(oauth, path)
    with (
        connect(emulator, credentials_file=str(path)) as connection,
        pytest.raises(AuthenticationFailed) as failure,
    ):
        round_trip(connection)
    assert "pullqueue_authenticate" in str(failure.value)
    for secret in oauth.issued + oauth.refresh_tokens_issued + [oauth.client_secret]:
        assert secret not in str(failure.value)


@pytest.mark.slow  # waits out the client's retries, seconds
def test_a_token_endpoint_failing_once_is_retried_not_an_authentication_error(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    expire_stored_token(oauth, path)
    oauth.fail_next(1, status=503)
    use(emulator, credentials_file=str(path))
    assert stored_token(path) == oauth.issued[-1]


@pytest.mark.slow  # waits out the client's retries, seconds
def test_a_token_endpoint_that_keeps_failing_is_a_connection_error(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    expire_stored_token(oauth, path)
    oauth.fail_next(100, status=503)
    connection = connect(emulator, credentials_file=str(path), request_retries=1)
    with pytest.raises(tuple(connection.connection_errors)) as failure:
        connection.connect()
    assert "token endpoint" in str(failure.value)
    connection.release()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read it"),
        ("{nope", "not a JSON credentials file"),
        ('["a list"]', "not a JSON credentials file"),
        ('{"type": "external_account"}', "not a file written by pullqueue_authenticate"),
        ('{"type": "authorized_user", "client_id": "x"}', "not a valid authorized_user file"),
        ('{"type": "service_account", "client_email": "x"}', "not a valid service_account file"),
    ],
)
def test_bad_credentials_file(tmp_path: pathlib.Path, content: Any, words: str) -> None:
    path = tmp_path / "credentials"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError) as failure:
        Connection(
            transport="kombu_appengine:Transport",
            transport_options={"project_name": PROJECT, "credentials_file": str(path)},
        ).connect()
    assert f"credentials_file {path}" in str(failure.value)
    assert words in str(failure.value)


def connect_with_file(path: pathlib.Path) -> None:
    Connection(
        transport="kombu_appengine:Transport",
        transport_options={"project_name": PROJECT, "credentials_file": str(path)},
    ).connect()


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "credentials"
    os.mkfifo(fifo)

    def write_nothing() -> None:
        # Were the FIFO opened to be read as a file, this writer lets that open
        # return (it would otherwise wait for ever); a check that refuses it
        # opens it without waiting, and so lets this one return too.
        os.close(os.open(fifo, os.O_WRONLY))

    writer = threading.Thread(target=write_nothing, daemon=True)
    writer.start()
    with pytest.raises(ConfigurationError) as failure:
        connect_with_file(fifo)
    # Refused without opening it, so the writer waits for a reader: be one
    # until it is done (it may not have begun to wait yet).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer.join(timeout=10)
    finally:
        os.close(reader)
    assert not writer.is_alive()
    assert str(failure.value) == f"credentials_file {fifo}: cannot read it: it is not a regular file"


def test_a_symlink_to_a_device_is_refused(tmp_path: pathlib.Path) -> None:
    link = tmp_path / "credentials"
    link.symlink_to("/dev/null")
    with pytest.raises(ConfigurationError) as failure:
        connect_with_file(link)
    assert str(failure.value) == f"credentials_file {link}: cannot read it: it is not a regular file"


def test_a_file_over_a_mebibyte_is_refused_unread(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "credentials"
    with open(path, "wb") as stream:
        stream.write(b'{"type": "authorized_user", "padding": "')
        stream.truncate(MAX_CREDENTIALS_FILE_BYTES + 1)
    with pytest.raises(ConfigurationError) as failure:
        connect_with_file(path)
    assert str(failure.value) == (
        f"credentials_file {path}: cannot read it: it is larger than 1 MiB, "
        "far more than any credentials file holds"
    )


def test_json_nested_too_deeply_is_one_error_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigurationError) as failure:
        connect_with_file(path)
    assert str(failure.value) == f"credentials_file {path}: not a JSON credentials file"


@pytest.mark.parametrize("field", ["client_secret", "refresh_token", "token_uri", "access_token"])
def test_a_pullqueue_authenticate_file_missing_a_field_names_it(
    oauth: OAuthServer, tmp_path: pathlib.Path, field: str
) -> None:
    path = authenticated_file(oauth, tmp_path / "credentials")
    document = json.loads(path.read_text())
    del document[field]
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError) as failure:
        connect_with_file(path)
    assert str(failure.value) == f"credentials_file {path}: oauth2client cannot read it: it has no {field!r}"


def test_bad_credentials_storage(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigurationError, match="get"):
        load_credentials(storage=object())
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="holds no credentials"):
        load_credentials(storage=Storage(str(empty)))


def test_bad_credentials_object() -> None:
    with pytest.raises(ConfigurationError, match="google-auth or oauth2client"):
        load_credentials(credentials="a token")


def test_no_application_default_credentials(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="no credentials"):
        Connection(
            transport="kombu_appengine:Transport", transport_options={"project_name": PROJECT}
        ).connect()
    monkeypatch.setenv(ADC_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError, match=ADC_ENV):
        load_credentials()


# -- nothing shows a secret ----------------------------------------------------------


def test_reprs_and_logs_show_no_secret(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = authenticated_file(oauth, tmp_path / "credentials")
    expire_stored_token(oauth, path)
    options = {"credentials_file": str(path), "credentials_storage": Storage(str(path))}
    with connect(emulator, **options) as connection:
        round_trip(connection)
        client = connection.transport.client_for_channels
        shown = [
            repr(connection),
            str(connection),
            repr(connection.transport),
            repr(client),
            repr(connection.default_channel),
            repr(client.credentials),
            caplog.text,
        ]
    assert len(oauth.issued) == 2
    for secret in oauth.issued + oauth.refresh_tokens_issued + [oauth.client_secret]:
        for text in shown:
            assert secret not in text


# -- files that are not regular, and token endpoints that say too much ----------------


def test_writing_credentials_never_replaces_a_file_that_is_not_regular(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for path in (fifo, link):
        with pytest.raises(OSError, match="not a regular file"):
            write_private_file(str(path), "{}")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["fifo", "link"]


def test_a_long_refusal_of_the_token_endpoint_is_bounded_and_keeps_error_and_description_apart(
    oauth: OAuthServer, emulator: Emulator, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth.error_description = "Token has been expired or revoked.\x1b[2J" + "x" * 100_000
    path = authenticated_file(oauth, tmp_path / "credentials")
    oauth.revoke_refresh_token(oauth.refresh_tokens_issued[-1])
    expire_stored_token(oauth, path)
    with (
        connect(emulator, credentials_file=str(path)) as connection,
        pytest.raises(AuthenticationFailed) as failure,
    ):
        round_trip(connection)
    message = str(failure.value)
    assert "invalid_grant (Token has been expired or revoked." in message
    assert len(message) < 500
    assert "\x1b" not in message
    assert "x" * 1000 not in caplog.text
