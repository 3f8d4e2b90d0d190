"""``pullqueue_authenticate`` end to end: a child process, a real OAuth 2.0
server on loopback (:mod:`tests.support.oauth_server`), and a "browser" that
follows the authorization URL and goes back to wherever the server redirects
it."""

from __future__ import annotations

import gc
import importlib.metadata
import io
import json
import os
import pathlib
import shutil
import stat
import sys
import urllib.parse
from typing import Any

import pytest
from oauth2client.client import OAuth2Credentials
from oauth2client.file import Storage

from kombu_appengine import authenticate
from kombu_appengine.api import TASKQUEUE_CONSUMER_SCOPE, TASKQUEUE_SCOPE, USERINFO_EMAIL_SCOPE
from tests.support.helpers import write_json
from tests.support.oauth_server import AuthenticateRun, OAuthServer, consent, visit


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def secrets_of(oauth: OAuthServer) -> list[str]:
    """Everything that must never be printed."""
    return oauth.issued + oauth.refresh_tokens_issued + [oauth.client_secret]


def assert_one_line_error(status: int, stderr: str, *words: str) -> None:
    assert status != 0
    assert "Traceback" not in stderr
    # Libraries may warn on stderr too (google-auth does on Python 3.9): what
    # the command says is one line of its own.
    ours = [line for line in stderr.splitlines() if line.startswith("pullqueue_authenticate: ")]
    assert len(ours) == 1, stderr
    for word in words:
        assert word in ours[0]


def assert_valid_credentials_file(
    path: pathlib.Path, oauth: OAuthServer, scope: str = TASKQUEUE_SCOPE
) -> None:
    """The file is private, in oauth2client's format, and holds what the server issued."""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["_module"] == "oauth2client.client"
    assert document["_class"] == "OAuth2Credentials"
    stored = Storage(str(path)).get()
    assert isinstance(stored, OAuth2Credentials)
    assert stored.access_token == oauth.issued[-1]
    assert stored.refresh_token == oauth.refresh_tokens_issued[-1]
    assert stored.client_id == oauth.client_id
    assert stored.token_uri == oauth.token_uri
    # The email scope too: without it, the gateway cannot tell whose token it is.
    assert stored.scopes == {scope, USERINFO_EMAIL_SCOPE}
    assert not stored.access_token_expired
    assert [entry.name for entry in path.parent.iterdir() if entry.name.endswith(".tmp")] == []


# -- the two modes ----------------------------------------------------------------


@pytest.mark.slow
def test_loopback_flow_as_a_browser_does(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "credentials"
    run = AuthenticateRun(client_secrets, str(target), "--no-browser")
    url = run.authorization_url()
    assert url.startswith(oauth.auth_uri + "?")
    asked = query_of(url)
    assert asked["client_id"] == oauth.client_id
    assert asked["scope"] == f"{TASKQUEUE_SCOPE} {USERINFO_EMAIL_SCOPE}"
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["code_challenge"]) == 43
    assert asked["access_type"] == "offline"
    assert asked["response_type"] == "code"
    redirect_uri = urllib.parse.urlsplit(asked["redirect_uri"])
    assert redirect_uri.scheme == "http"
    assert redirect_uri.hostname == "127.0.0.1"
    assert redirect_uri.port

    back = consent(url)
    assert back.startswith(asked["redirect_uri"])
    status, _, page = visit(back)
    assert status == 200
    assert b"close this window" in page

    code, stdout, stderr = run.finish()
    assert code == 0, stderr
    assert oauth.grants == ["authorization_code"]
    assert f"Credentials written to {target}" in stdout
    assert_valid_credentials_file(target, oauth)
    for secret in secrets_of(oauth):
        assert secret not in stdout + stderr


@pytest.mark.slow
def test_manual_flow_reads_the_redirected_address(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "credentials"
    run = AuthenticateRun(client_secrets, str(target), "--noauth_local_webserver")
    url = run.authorization_url()
    assert query_of(url)["redirect_uri"] == authenticate.MANUAL_REDIRECT_URI
    back = consent(url)
    assert back.startswith(authenticate.MANUAL_REDIRECT_URI + "?code=")

    code, stdout, stderr = run.finish(back)
    assert code == 0, stderr
    assert_valid_credentials_file(target, oauth)
    for secret in secrets_of(oauth):
        assert secret not in stdout + stderr


@pytest.mark.slow
def test_manual_flow_takes_the_bare_code_and_the_consumer_scope(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "credentials"
    run = AuthenticateRun(client_secrets, str(target), "--noauth_local_webserver", "--scope", "consumer")
    url = run.authorization_url()
    assert query_of(url)["scope"] == f"{TASKQUEUE_CONSUMER_SCOPE} {USERINFO_EMAIL_SCOPE}"
    code, _, stderr = run.finish("  " + query_of(consent(url))["code"] + "  ")
    assert code == 0, stderr
    assert_valid_credentials_file(target, oauth, TASKQUEUE_CONSUMER_SCOPE)


@pytest.mark.slow
def test_installed_console_script_replaces_a_file_and_keeps_it_private(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    entry_points = importlib.metadata.distribution("kombu-appengine-pullqueue").entry_points
    scripts = [
        entry
        for entry in entry_points
        if entry.group == "console_scripts" and entry.name == "pullqueue_authenticate"
    ]
    assert [entry.value for entry in scripts] == ["kombu_appengine.authenticate:main"]
    script = shutil.which("pullqueue_authenticate", path=os.path.dirname(sys.executable))
    assert script, "pullqueue_authenticate is not installed next to this Python"
    target = tmp_path / "credentials"
    target.write_text("old")
    target.chmod(0o644)
    run = AuthenticateRun(client_secrets, str(target), "--noauth_local_webserver", command=[script])
    code, _, stderr = run.finish(consent(run.authorization_url()))
    assert code == 0, stderr
    assert_valid_credentials_file(target, oauth)


# -- errors: one line on stderr, a non-zero exit, no file ----------------------

#: A well-formed installed client, for the malformed variants below.
CLIENT = {
    "client_id": "id",
    "client_secret": "secret",
    "auth_uri": "https://accounts.example/auth",
    "token_uri": "https://oauth2.example/token",
    "redirect_uris": ["http://localhost"],
}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["cannot read it"]),
        ("{not json", ["not JSON"]),
        (json.dumps({"installed": {"client_id": "x"}}), ["client_secret", "non-empty string"]),
        (json.dumps(["installed"]), ["not the JSON of an OAuth client"]),
        (json.dumps(None), ["not the JSON of an OAuth client"]),
        (json.dumps({"installed": {}, "web": {}}), ["not the JSON of an OAuth client"]),
        (json.dumps({"installed": "x"}), ['"installed" must be an object']),
        (json.dumps({"installed": []}), ['"installed" must be an object']),
        (json.dumps({"installed": dict(CLIENT, client_id=1)}), ["client_id", "non-empty string"]),
        (json.dumps({"installed": dict(CLIENT, token_uri=4)}), ["token_uri", "non-empty string"]),
        (json.dumps({"installed": dict(CLIENT, auth_uri="not a url")}), ["auth_uri", "http(s) URL"]),
        (json.dumps({"installed": dict(CLIENT, token_uri="ftp://x/t")}), ["token_uri", "http(s) URL"]),
        (json.dumps({"installed": dict(CLIENT, redirect_uris="x")}), ["redirect_uris", "list of URLs"]),
        (b"\xff\xfe{".decode("latin-1"), ["not JSON"]),
        ("[" * 100_000, ["not JSON"]),
    ],
)
def test_missing_or_malformed_client_secrets(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture, content: Any, words: list[str]
) -> None:
    secrets_path = tmp_path / "client_secrets.json"
    if content is not None:
        secrets_path.write_text(content)
    # A finaliser of other tests' garbage that runs while the JSON parser is
    # at the recursion limit ("[" * 100_000) cannot be reported: CPython then
    # writes half a line to stderr, in front of the command's own line.
    gc.collect()
    gc.disable()
    try:
        status = authenticate.main([str(secrets_path), str(tmp_path / "credentials"), "--no-browser"])
    finally:
        gc.enable()
    captured = capsys.readouterr()
    assert_one_line_error(status, captured.err, str(secrets_path), *words)
    assert not (tmp_path / "credentials").exists()


#: A secret that a malformed field of client_secrets.json holds: never shown.
SECRET = "GOCSPX-SUPERSECRET"


@pytest.mark.parametrize(
    ("installed", "words"),
    [
        (dict(CLIENT, client_secret=[SECRET]), ["client_secret", "not a list"]),
        (dict(CLIENT, client_secret={"value": SECRET}), ["client_secret", "not an object"]),
        (dict(CLIENT, client_id=[SECRET]), ["client_id", "not a list"]),
        (dict(CLIENT, auth_uri=SECRET), ["auth_uri", "http(s) URL"]),
        (dict(CLIENT, token_uri=f"ftp://{SECRET}/token"), ["token_uri", "http(s) URL"]),
        (dict(CLIENT, redirect_uris=SECRET), ["redirect_uris", "not a string"]),
        (dict(CLIENT, redirect_uris=[SECRET, 5]), ["redirect_uris", "list of URLs"]),
        (SECRET, ['"installed" must be an object', "not a string"]),
        ([SECRET], ['"installed" must be an object', "not a list"]),
    ],
)
def test_malformed_client_secrets_never_echo_a_value(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture, installed: Any, words: list[str]
) -> None:
    secrets_path = write_json(tmp_path / "client_secrets.json", {"installed": installed})
    status = authenticate.main([str(secrets_path), str(tmp_path / "credentials"), "--no-browser"])
    captured = capsys.readouterr()
    assert_one_line_error(status, captured.err, str(secrets_path), *words)
    assert SECRET not in captured.out + captured.err


def special_target(tmp_path: pathlib.Path, kind: str) -> pathlib.Path:
    """An output path that must be refused: a FIFO, a symlink to one, a directory, or in no directory."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if kind == "symlink to a fifo":
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "link").symlink_to(tmp_path / "fifo")
        return tmp_path / "link"
    if kind == "directory":
        (tmp_path / "dir").mkdir()
        return tmp_path / "dir"
    return tmp_path / "missing" / "credentials"


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("fifo", ["exists and is not a regular file"]),
        ("symlink to a fifo", ["exists and is not a regular file"]),
        ("directory", ["is a directory"]),
        ("missing directory", ["does not exist"]),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_before_the_consent(
    client_secrets: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    words: list[str],
) -> None:
    target = special_target(tmp_path, kind)
    before = target.lstat().st_mode if os.path.lexists(target) else None
    # Were the flow to start, it would read an empty answer here and fail on that instead.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status = authenticate.main([client_secrets, str(target), "--noauth_local_webserver"])
    captured = capsys.readouterr()
    assert_one_line_error(status, captured.err, str(target), *words)
    assert captured.out == "", "no authorization URL: the user is not asked to consent for nothing"
    if before is not None:
        assert target.lstat().st_mode == before


def test_web_client_is_refused(
    oauth: OAuthServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture
) -> None:
    secrets_path = str(write_json(tmp_path / "client_secrets.json", oauth.client_secrets("web")))
    status = authenticate.main([secrets_path, str(tmp_path / "credentials"), "--no-browser"])
    assert_one_line_error(status, capsys.readouterr().err, "'web' client", "Desktop app")
    assert oauth.authorization_requests == []
    assert not (tmp_path / "credentials").exists()


@pytest.mark.slow
def test_consent_denied_in_the_loopback_flow(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    oauth.deny = True
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--no-browser")
    back = consent(run.authorization_url())
    assert "error=access_denied" in back
    status, _, page = visit(back)
    assert status == 200
    assert b"denied" in page
    code, _, stderr = run.finish()
    assert_one_line_error(code, stderr, "consent was denied")
    assert oauth.grants == []
    assert not (tmp_path / "credentials").exists()


@pytest.mark.slow
def test_consent_denied_in_the_manual_flow(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    oauth.deny = True
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--noauth_local_webserver")
    code, _, stderr = run.finish(consent(run.authorization_url()))
    assert_one_line_error(code, stderr, "access_denied")
    assert not (tmp_path / "credentials").exists()


@pytest.mark.slow
def test_state_mismatch_in_the_loopback_flow(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--no-browser")
    back = consent(run.authorization_url())
    forged = back.replace("state=", "state=forged")
    visit(forged)
    code, _, stderr = run.finish()
    assert_one_line_error(code, stderr, "state")
    assert oauth.grants == []
    assert not (tmp_path / "credentials").exists()


@pytest.mark.slow
def test_state_missing_in_a_pasted_address(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--noauth_local_webserver")
    code = query_of(consent(run.authorization_url()))["code"]
    status, _, stderr = run.finish(f"http://localhost/?code={code}")
    assert_one_line_error(status, stderr, "state")
    assert oauth.grants == []


@pytest.mark.slow
def test_token_endpoint_refuses_the_code(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--noauth_local_webserver")
    consent(run.authorization_url())
    code, stdout, stderr = run.finish("not-the-code")
    assert_one_line_error(code, stderr, "refused the authorization code", "invalid_grant", oauth.token_uri)
    assert not (tmp_path / "credentials").exists()
    assert oauth.client_secret not in stdout + stderr


@pytest.mark.slow
def test_a_long_token_endpoint_error_is_bounded_and_keeps_error_and_description_apart(
    oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path
) -> None:
    oauth.error_description = "Token has been expired or revoked.\x1b[2J" + "x" * 100_000
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--noauth_local_webserver")
    consent(run.authorization_url())
    code, _, stderr = run.finish("not-the-code")
    assert_one_line_error(code, stderr, "invalid_grant (Token has been expired or revoked.")
    [line] = [line for line in stderr.splitlines() if line.startswith("pullqueue_authenticate: ")]
    assert len(line) < 400
    assert "\x1b" not in stderr


@pytest.mark.slow
def test_no_answer_pasted(oauth: OAuthServer, client_secrets: str, tmp_path: pathlib.Path) -> None:
    run = AuthenticateRun(client_secrets, str(tmp_path / "credentials"), "--noauth_local_webserver")
    run.authorization_url()
    code, _, stderr = run.finish()
    assert_one_line_error(code, stderr, "no authorization code")


def test_the_server_insists_on_pkce(oauth: OAuthServer) -> None:
    """What makes a successful flow above a proof that PKCE was used."""
    url = (
        oauth.auth_uri
        + "?"
        + urllib.parse.urlencode(
            {
                "client_id": oauth.client_id,
                "redirect_uri": "http://127.0.0.1:9/",
                "response_type": "code",
                "scope": TASKQUEUE_SCOPE,
                "state": "s",
            }
        )
    )
    assert "error=invalid_request" in consent(url)


def test_unknown_scope_is_a_usage_error(
    client_secrets: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        authenticate.main([client_secrets, str(tmp_path / "credentials"), "--scope", "everything"])
    assert exit_info.value.code == 2
    assert "not a Task Queue scope" in capsys.readouterr().err


def test_an_error_the_browser_brings_back_is_bounded_too() -> None:
    params = {"error": ["invalid_scope"], "error_description": ["\x1b[2J" + "x" * 100_000], "state": ["s"]}
    with pytest.raises(authenticate.AuthenticationError) as refused:
        authenticate._check_redirect(params, "s")
    message = str(refused.value)
    assert message.startswith("the authorization server refused: invalid_scope (")
    assert len(message) < 300
    assert "\x1b" not in message
