"""Bearer tokens (require_auth, accepted_tokens) and queue ACLs (identities)."""

import json

import google.oauth2.credentials
import httplib2
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import QueueConfig
from tests.support import raw_http
from tests.support.api import PROJECT, QUEUE, api_path, assert_google_error, expect_error
from tests.support.helpers import build_service


def authorized_service(url, token):
    credentials = google.oauth2.credentials.Credentials(token=token)
    return build_from_document(load_document(url + "/"), credentials=credentials)


def test_require_auth_refuses_requests_without_a_token(make_server, clock):
    running = make_server(queues=[QUEUE], require_auth=True, clock=clock)
    response = raw_http.request(running, "GET", api_path())
    assert response.status == 401
    assert_google_error(response.json(), 401, "required")
    expect_error(
        build_service(running.url).taskqueues().get(project=PROJECT, taskqueue=QUEUE), 401, "required"
    )
    assert running.tokens == []


def test_require_auth_accepts_a_bearer_token_and_records_it(make_server, clock):
    running = make_server(queues=[QUEUE], require_auth=True, clock=clock)
    service = authorized_service(running.url, "token-1")
    assert service.taskqueues().get(project=PROJECT, taskqueue=QUEUE).execute()["id"] == QUEUE
    response = raw_http.request(running, "GET", api_path(), headers={"Authorization": "Bearer token-2"})
    assert response.status == 200
    assert running.tokens == ["token-1", "token-2"]


def test_accepted_tokens_refuse_other_tokens(make_server, clock):
    running = make_server(queues=[QUEUE], accepted_tokens=["good"], clock=clock)
    response = raw_http.request(running, "GET", api_path(), headers={"Authorization": "Bearer bad"})
    assert response.status == 401
    assert_google_error(response.json(), 401, "authError")
    assert (
        authorized_service(running.url, "good").taskqueues().get(project=PROJECT, taskqueue=QUEUE).execute()
    )
    assert running.tokens == ["bad", "good"]


def test_identities_hold_requests_to_the_queue_acl(make_server):
    acl_queue = QueueConfig(
        "guarded", consumer_emails=["worker@example.com"], producer_emails=["app@example.com"]
    )
    identities = {"worker-token": "worker@example.com", "app-token": "app@example.com"}
    server = make_server(queues=[acl_queue], identities=identities)

    def call(token, method, path, body=None):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        response, content = httplib2.Http().request(
            f"{server.url}/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/guarded{path}",
            method,
            body=json.dumps(body) if body is not None else None,
            headers=headers,
        )
        return response.status, json.loads(content) if content else None

    assert call("app-token", "POST", "/tasks", {"payloadBase64": "aGk="})[0] == 200
    status, document = call("worker-token", "POST", "/tasks", {"payloadBase64": "aGk="})
    assert status == 403
    assert document["error"]["errors"][0]["reason"] == "forbidden"
    assert "worker@example.com" in document["error"]["message"]
    assert call("app-token", "POST", "/tasks/lease?numTasks=1&leaseSecs=10")[0] == 403
    status, leased = call("worker-token", "POST", "/tasks/lease?numTasks=1&leaseSecs=10")
    assert status == 200
    assert len(leased["items"]) == 1
    assert call("stranger-token", "GET", "")[0] == 403
    assert call("app-token", "GET", "")[0] == 200


def test_acl_emails_are_compared_whatever_their_case(make_server):
    acl_queue = QueueConfig(
        "guarded", consumer_emails=["Bob@Example.com"], producer_emails=["APP@example.com"]
    )
    identities = {"bob-token": "bob@example.com", "app-token": "App@Example.COM"}
    server = make_server(queues=[acl_queue], identities=identities)

    def headers(token):
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    body = json.dumps({"payloadBase64": "aGk="}).encode()
    insert = api_path("tasks", queue="guarded")
    inserted = raw_http.request(server, "POST", insert, body, headers("app-token"))
    assert inserted.status == 200, inserted.body[:300]
    lease = api_path("tasks", "lease?numTasks=1&leaseSecs=10", queue="guarded")
    leased = raw_http.request(server, "POST", lease, None, headers("bob-token"))
    assert leased.status == 200, leased.body[:300]
    assert len(leased.json()["items"]) == 1
