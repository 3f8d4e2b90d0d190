"""``pullqueue_gateway serve`` and ``pullqueue_gateway scaffold``."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
import wsgiref.simple_server

import pytest
from google.appengine.api import appinfo
from kombu import Connection

from kombu_appengine.dashboard.app import DATA_PATH, PURGE_PATH
from kombu_appengine.gateway import MAX_REQUEST_BYTES, cli
from tests.gateway.conftest import APP_ID
from tests.support.api import api_path
from tests.support.helpers import ROOT
from tests.support.raw_http import SOCKET_TIMEOUT, Answer, assert_google_error, read_answer, request_to


@pytest.mark.slow
def test_serve_prints_where_it_listens_and_kombu_works_through_it(tmp_path):
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text(
        "queue:\n- name: pull-queue\n  mode: pull\n  acl:\n  - writer_email: a@example.com\n"
    )
    command = [sys.executable, "-m", "kombu_appengine.gateway.cli", "serve", "--queue-yaml", str(queue_yaml)]
    process = subprocess.Popen([*command, "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        with Connection(
            transport="kombu_appengine:Transport", transport_options={"api_endpoint": url}
        ) as conn:
            queue = conn.SimpleQueue("pull-queue")
            queue.put({"hello": "gateway"})
            message = queue.get(timeout=10)
            assert message.payload == {"hello": "gateway"}
            message.ack()
            queue.close()
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--port", "70000", "'70000' is not an integer from 0 to 65535"),
        ("--port", "-5", "'-5' is not an integer from 0 to 65535"),
        ("--port", "http", "'http' is not an integer from 0 to 65535"),
        ("--host", "", "an address must not be empty (0.0.0.0 listens on every address)"),
        ("--project", "my app", "'my app' is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"),
    ],
)
def test_serve_refuses_a_value_it_cannot_serve_with_in_one_error_line(
    tmp_path, capsys, option, value, message
):
    """As the emulator does, with the same checks: no traceback, nothing started."""
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text("queue:\n- name: q\n  mode: pull\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--queue-yaml", str(queue_yaml), f"{option}={value}", "--log-format", "json"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"pullqueue_gateway serve: error: argument {option}: {message}"


def test_scaffold_writes_an_app_yaml_the_sdk_accepts(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kombu_appengine.gateway.cli",
            "scaffold",
            str(tmp_path / "app"),
            "--service",
            "tq",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    info = appinfo.LoadSingleAppInfo((tmp_path / "app" / "app.yaml").read_text())
    assert (info.service, info.app_engine_apis) == ("tq", True)
    assert info.runtime.startswith("python3")
    assert "kombu-appengine-pullqueue[gateway]==" in (tmp_path / "app" / "requirements.txt").read_text()
    assert "acl" in (tmp_path / "app" / "queue.yaml").read_text()


def test_a_scaffolded_main_py_serves_requests(gateway, oauth, tmp_path, monkeypatch):
    from kombu_appengine.gateway.scaffold import scaffold

    scaffold(str(tmp_path / "app"))
    monkeypatch.chdir(tmp_path / "app")
    monkeypatch.setenv("GATEWAY_TOKENINFO_URL", oauth.tokeninfo_uri)
    monkeypatch.setenv("GATEWAY_ALLOWED_SERVICE_ACCOUNTS", "robot@example.com")
    monkeypatch.setenv("GAE_APPLICATION", f"s~{APP_ID}")
    spec = importlib.util.spec_from_file_location("scaffolded_main", tmp_path / "app" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, main.app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = oauth.access_token_for("robot@example.com")
        where = ("127.0.0.1", server.server_port)
        headers = {"Authorization": f"Bearer {token}"}
        ours, other = (
            api_path("tasks", project=project, queue="pull-queue") for project in (APP_ID, "other-app")
        )
        assert request_to(where, "GET", ours, headers=headers).status == 200
        assert request_to(where, "GET", ours).status == 401
        assert request_to(where, "GET", other, headers=headers).status == 404
        # The dashboard, read-only and behind the same tokens.
        page = request_to(where, "GET", "/")
        assert page.status == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert request_to(where, "GET", DATA_PATH).status == 401
        data = request_to(where, "GET", DATA_PATH, headers=headers)
        assert [group["project"] for group in data.json()["projects"]] == [APP_ID]
        purge = json.dumps({"project": APP_ID, "queue": "pull-queue"}).encode()
        answer = request_to(where, "POST", PURGE_PATH, purge, {**headers, "Content-Type": "application/json"})
        assert answer.status == 403
        # A body is read only from a caller with credentials, and never past App Engine's cap.
        batch_head = (
            "POST /batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/mixed; boundary=b\r\n"
        )
        refused = head_only(where, batch_head + f"Content-Length: {MAX_REQUEST_BYTES}\r\n\r\n")
        assert_google_error(refused, 401)
        too_large = head_only(
            where,
            batch_head + f"Authorization: Bearer {token}\r\nContent-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n",
        )
        assert_google_error(too_large, 413, str(MAX_REQUEST_BYTES))
    finally:
        server.shutdown()
        server.server_close()


def head_only(where: tuple[str, int], request_head: str) -> Answer | None:
    """Send a request's head, never its body, and read the answer."""
    with socket.create_connection(where, timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(request_head.encode("latin-1"))
        return read_answer(sock, time.monotonic() + SOCKET_TIMEOUT)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--tokeninfo-url", "http://127.0.0.1:9/tokeninfo"], ["--tokeninfo-url needs --require-auth"]),
        (["--allow-service-account", "robot@example.com"], ["--allow-service-account needs --require-auth"]),
        (["--project", "a b"], ["--project", "'a b' is not an application id"]),
        (["--require-auth", "--tokeninfo-url", "tokeninfo"], ["--tokeninfo-url", "http:// or https://"]),
        (["--require-auth", "--tokeninfo-url", "http://host:99999/"], ["--tokeninfo-url", "malformed"]),
        (["--require-auth", "--tokeninfo-url", "http://host/t?x=1"], ["--tokeninfo-url", "no query"]),
    ],
)
def test_serve_refuses_arguments_it_cannot_honour_in_one_line(
    tmp_path, capsys, monkeypatch, arguments, words
):
    """Above all, no flag of authentication is silently ignored: that would serve an open gateway."""
    from kombu_appengine.gateway import cli

    def serve_until_stopped(server):
        server.stop()
        raise AssertionError(f"it served, with {arguments}")

    monkeypatch.setattr(cli, "serve_until_stopped", serve_until_stopped)
    (tmp_path / "queue.yaml").write_text("queue:\n- name: q\n  mode: pull\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--queue-yaml", str(tmp_path / "queue.yaml"), "--port", "0", *arguments])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    [line] = [line for line in error.splitlines() if "error:" in line]
    for word in words:
        assert word in line


@pytest.mark.parametrize("service", ["x: y", "gw\nentrypoint: evil", "", "Bad_Name", "1st", "a-", "a" * 64])
def test_scaffold_refuses_a_name_app_engine_refuses_as_a_service(tmp_path, capsys, service):
    """Written as is into app.yaml, such a name would break it, or add keys to it."""
    from kombu_appengine.gateway.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["scaffold", str(tmp_path / "app"), "--service", service])
    assert stopped.value.code == 2
    assert "is not an App Engine service name" in capsys.readouterr().err
    assert not (tmp_path / "app").exists()


def test_scaffold_takes_the_longest_service_name_and_says_in_one_line_what_it_cannot_write(tmp_path, capsys):
    from kombu_appengine.gateway.cli import main

    main(["scaffold", str(tmp_path / "app"), "--service", "a" + "-" * 61 + "b"])
    assert "service: a--" in (tmp_path / "app" / "app.yaml").read_text()
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stopped:
        main(["scaffold", str(tmp_path / "file" / "app")])
    assert (
        stopped.value.code == f"pullqueue_gateway: cannot write {tmp_path / 'file' / 'app'}: Not a directory"
    )
