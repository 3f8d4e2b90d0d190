"""Bearer tokens verified at a token-info endpoint (the tests' OAuth server), and queues' ACLs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import google.oauth2.credentials
import pytest
from googleapiclient.discovery import build_from_document
from googleapiclient.http import BatchHttpRequest

from kombu_appengine.api import TASKQUEUE_CONSUMER_SCOPE, TASKQUEUE_SCOPE, USERINFO_EMAIL_SCOPE
from kombu_appengine.dashboard.app import DATA_PATH
from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import QueueConfig
from kombu_appengine.gateway import MAX_REQUEST_BYTES
from kombu_appengine.gateway.auth import TokenInfoAuthenticator
from kombu_appengine.gateway.local import LocalGateway
from tests.gateway.conftest import APP_ID, QUEUES
from tests.support.api import api_path
from tests.support.oauth_server import CLIENT_SCOPE, OAuthServer
from tests.support.raw_http import assert_google_error, exchange, head, post_json, request

ALLOWED = "robot@test-app.iam.gserviceaccount.com"


@pytest.fixture
def guarded(oauth: OAuthServer) -> Iterator[LocalGateway]:
    """A gateway that verifies tokens at ``oauth``'s token-info endpoint."""
    authenticator = TokenInfoAuthenticator(oauth.tokeninfo_uri, allowed_service_accounts=[ALLOWED])
    with LocalGateway(QUEUES, project=APP_ID, authenticator=authenticator) as running:
        yield running


def token(oauth: OAuthServer, email: str, scope: str = CLIENT_SCOPE) -> str:
    return oauth.access_token_for(email, scope)


def call(server, token=None, queue="guarded", path=("tasks",), method="GET"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(server, method, api_path(*path, project=APP_ID, queue=queue), headers=headers)


def test_no_token_is_401_login_required(guarded):
    error = assert_google_error(call(guarded), 401)
    assert error["errors"][0]["reason"] == "required"


def test_a_token_the_endpoint_refuses_is_401(guarded):
    error = assert_google_error(call(guarded, "ya29.not-a-token"), 401)
    assert error["errors"][0]["reason"] == "authError"


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (429, {"error": "rate_limit_exceeded", "error_description": "Too many requests"}),
        (500, {"error": "internal_failure"}),
        (400, {"error": "invalid_request"}),
        (403, {"error": "forbidden"}),
        (200, [1, 2]),
    ],
)
def test_a_token_info_answer_other_than_invalid_token_is_a_retryable_503(guarded, oauth, status, document):
    """Only Google's 400 ``invalid_token`` says the token is bad; the rest says nothing of it."""
    worker = token(oauth, "worker@example.com")
    oauth.answer_tokeninfo_with(status, document)
    error = assert_google_error(call(guarded, worker), 503, "token-info")
    assert error["errors"][0]["reason"] == "backendError"
    assert call(guarded, worker).status == 200, "the failure was not kept"


def test_a_consumer_in_the_acl_may_list_and_others_get_403(guarded, oauth):
    assert call(guarded, token(oauth, "worker@example.com")).status == 200
    error = assert_google_error(call(guarded, token(oauth, "stranger@example.com")), 403, "queue.yaml")
    assert error["errors"][0]["reason"] == "forbidden"


def test_a_writer_may_insert_but_not_lease(guarded, oauth):
    writer = token(oauth, "app@example.com")
    headers = {"Authorization": f"Bearer {writer}"}
    inserted = post_json(guarded, api_path("tasks", project=APP_ID, queue="guarded"), {}, headers)
    assert inserted.status == 200
    assert call(guarded, writer, path=("tasks", "lease?numTasks=1&leaseSecs=5"), method="POST").status == 403


def test_a_token_of_the_consumer_scope_may_consume_but_never_insert(guarded, oauth):
    """Not even in a batch, nor for an account the ACL or the allow-list lets insert."""
    consume_only = f"{TASKQUEUE_CONSUMER_SCOPE} {USERINFO_EMAIL_SCOPE}"
    for email in ("app@example.com", ALLOWED):
        consumer = token(oauth, email, scope=consume_only)
        headers = {"Authorization": f"Bearer {consumer}"}
        error = assert_google_error(
            post_json(guarded, api_path("tasks", project=APP_ID, queue="guarded"), {}, headers), 403
        )
        assert TASKQUEUE_SCOPE in error["message"]
        assert error["errors"][0]["reason"] == "insufficientPermissions"
    assert (
        call(guarded, consumer, path=("tasks", "lease?numTasks=1&leaseSecs=5"), method="POST").status == 200
    )
    service = build_from_document(
        load_document(guarded.url + "/"), credentials=google.oauth2.credentials.Credentials(token=consumer)
    )
    answers = {}
    batch = BatchHttpRequest(
        callback=lambda request_id, response, error: answers.update({request_id: error}),
        batch_uri=guarded.url + "/batch",
    )
    batch.add(service.tasks().insert(project=APP_ID, taskqueue="guarded", body={"id": "in-a-batch"}))
    batch.execute()
    assert answers["1"].resp.status == 403
    assert TASKQUEUE_SCOPE in answers["1"].content.decode()


def test_an_allowed_service_account_uses_every_queue(guarded, oauth):
    robot = token(oauth, ALLOWED)
    assert call(guarded, robot).status == 200
    assert call(guarded, robot, queue="pull-queue").status == 200


def test_an_acl_entry_matches_the_tokens_email_whatever_its_case(oauth):
    """queue.yaml may write Bob@Example.com; Google's token-info says bob@example.com."""
    authenticator = TokenInfoAuthenticator(oauth.tokeninfo_uri)
    queues = [QueueConfig("bobs", consumer_emails=["Bob@Example.com"])]
    with LocalGateway(queues, project=APP_ID, authenticator=authenticator) as gateway:
        bob = token(oauth, "bob@example.com")
        assert call(gateway, bob, queue="bobs").status == 200
        shown = request(gateway, "GET", DATA_PATH, headers={"Authorization": f"Bearer {bob}"})
        assert shown.status == 200, shown.body[:300]
        assert shown.json()["hidden"] == 0
        assert [view["name"] for view in shown.json()["projects"][0]["queues"]] == ["bobs"]


def test_a_token_without_the_task_queue_scope_is_403(guarded, oauth):
    assert_google_error(call(guarded, token(oauth, ALLOWED, scope="email")), 403, "scope")


def test_a_token_without_an_email_is_403_saying_to_request_the_email_scope(guarded, oauth):
    """Google's token-info reports no email for a token without the userinfo.email scope."""
    for email in ("worker@example.com", ALLOWED):
        error = assert_google_error(call(guarded, token(oauth, email, scope=TASKQUEUE_SCOPE)), 403)
        assert "carries no" in error["message"]
        assert USERINFO_EMAIL_SCOPE in error["message"]


@pytest.mark.parametrize("path", ["/batch", api_path("tasks", project=APP_ID, queue="guarded")])
def test_a_body_is_not_read_from_a_caller_without_credentials(guarded, path):
    """Refused from the head alone: the body (announced, never sent) is not waited for."""
    for credentials in ((), ("Authorization: Bearer ya29.refused",)):
        request_head = head(
            guarded,
            f"POST {path} HTTP/1.1",
            "Content-Type: multipart/mixed; boundary=b"
            if path == "/batch"
            else "Content-Type: application/json",
            "Content-Length: 1000000",
            *credentials,
        )
        assert_google_error(exchange(guarded, request_head), 401)


def test_the_gateway_reads_no_body_over_app_engines_32_mib(gateway):
    request_head = head(
        gateway,
        "POST /batch HTTP/1.1",
        "Content-Type: multipart/mixed; boundary=b",
        f"Content-Length: {MAX_REQUEST_BYTES + 1}",
    )
    error = assert_google_error(exchange(gateway, request_head), 413, str(MAX_REQUEST_BYTES))
    assert error["errors"][0]["reason"] == "uploadTooLarge"


def test_the_answer_is_kept_briefly_and_no_token_is_logged(guarded, oauth, caplog):
    caplog.set_level(logging.DEBUG)
    worker = token(oauth, "worker@example.com")
    for _ in range(3):
        assert call(guarded, worker).status == 200
    assert oauth.tokeninfo_requests == 1
    call(guarded, "ya29.secret-looking-token")
    assert worker not in caplog.text
    assert "secret-looking" not in caplog.text


@pytest.mark.slow
def test_serve_with_require_auth_verifies_tokens_at_the_given_endpoint_and_never_prints_one(
    spawn, oauth, tmp_path
):
    """``pullqueue_gateway serve --require-auth --tokeninfo-url URL`` as a process, logging all."""
    (tmp_path / "queue.yaml").write_text(
        "queue:\n- name: guarded\n  mode: pull\n  acl:\n  - user_email: worker@example.com\n",
        encoding="utf-8",
    )
    gateway = spawn(
        "--queue-yaml",
        str(tmp_path / "queue.yaml"),
        "--project",
        APP_ID,
        "--require-auth",
        "--tokeninfo-url",
        oauth.tokeninfo_uri,
        "--log-level",
        "DEBUG",
        kind="gateway",
    )
    worker = token(oauth, "worker@example.com")
    stranger = token(oauth, "stranger@example.com")

    error = assert_google_error(call(gateway), 401)
    assert error["errors"][0]["reason"] == "required"
    assert call(gateway, worker).status == 200
    assert call(gateway, worker, path=("tasks", "lease?numTasks=1&leaseSecs=5"), method="POST").status == 200
    error = assert_google_error(call(gateway, stranger), 403, "queue.yaml")
    assert error["errors"][0]["reason"] == "forbidden"
    assert_google_error(call(gateway, "ya29.refused-token"), 401)
    assert oauth.tokeninfo_requests == 3
    # Failures are injected for callers with a token only.
    stall = {"instructions": {"taskqueue.tasks.lease": ["stall-for-60s"]}}
    assert_google_error(post_json(gateway, "/retry_test", stall), 401)

    output = gateway.stop()
    assert "GET /taskqueue/v1beta2/projects/test-app/taskqueues/guarded/tasks" in output  # it did log
    for secret in (worker, stranger, "ya29.refused-token"):
        assert secret not in output
    assert "ya29." not in output


def test_the_transport_reaches_the_gateway_with_a_service_account_key_and_a_users_file(
    guarded, oauth, tmp_path
):
    """End to end, as the README says: kombu with credentials, the gateway asking the token-info endpoint."""
    from kombu import Connection

    from tests.support.helpers import write_json

    key = write_json(tmp_path / "key.json", oauth.service_account_info(ALLOWED))
    oauth.user_email = "worker@example.com"
    user_file = oauth.write_credentials_file(tmp_path / "credentials")

    def connect(credentials_file):
        options = {
            "api_endpoint": guarded.url,
            "project_name": APP_ID,
            "credentials_file": str(credentials_file),
        }
        return Connection(transport="kombu_appengine:Transport", transport_options=options)

    with connect(key) as connection:
        connection.SimpleQueue("guarded").put({"from": "a service account"})
    with connect(user_file) as connection:
        queue = connection.SimpleQueue("guarded")
        message = queue.get(timeout=10)
        assert message.payload == {"from": "a service account"}
        message.ack()
        queue.close()
