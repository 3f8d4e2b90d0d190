"""``pullqueue_gateway serve`` and ``pullqueue_gateway scaffold``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import wsgiref.simple_server

import pytest
from google.appengine.api import appinfo
from kombu import Connection

from kombu_appengine.api import TASKQUEUE_SCOPE
from kombu_appengine.dashboard.app import DATA_PATH, PURGE_PATH
from kombu_appengine.gateway import cli
from tests.gateway.conftest import APP_ID
from tests.support.api import api_path
from tests.support.helpers import ROOT
from tests.support.raw_http import request_to


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
        token = oauth._issue(oauth.client_id, TASKQUEUE_SCOPE, refresh=False, email="robot@example.com")
        where = ("127.0.0.1", server.server_port)
        headers = {"Authorization": f"Bearer {token['access_token']}"}
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
    finally:
        server.shutdown()
        server.server_close()
