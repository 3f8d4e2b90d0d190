"""The discovery document the emulator serves, and the standard query parameters
Google's APIs take."""

import base64

import httplib2
from googleapiclient.discovery import build

from kombu_appengine.discovery import load_document
from tests.support import raw_http
from tests.support.api import DISCOVERY_PATH, PROJECT, QUEUE, api_path, insert, lease
from tests.support.helpers import b64


def test_discovery_document_points_at_the_emulator(emulator):
    response = raw_http.request(emulator, "GET", DISCOVERY_PATH)
    assert response.status == 200
    document = response.json()
    root = emulator.url + "/"
    assert (document["name"], document["version"]) == ("taskqueue", "v1beta2")
    assert document["rootUrl"] == root
    assert document["baseUrl"] == root + "taskqueue/v1beta2/projects/"
    assert document["batchPath"] == "batch"
    assert document["resources"].keys() == load_document()["resources"].keys()


def test_a_client_built_from_the_served_document_works(emulator):
    service = build(
        "taskqueue",
        "v1beta2",
        discoveryServiceUrl=emulator.url + "/discovery/v1/apis/{api}/{apiVersion}/rest",
        http=httplib2.Http(),
        static_discovery=False,
        cache_discovery=False,
    )
    insert(service, b"hello", id="t1")
    [task] = lease(service)["items"]
    assert (task["id"], base64.b64decode(task["payloadBase64"])) == ("t1", b"hello")


def test_standard_parameters_do_not_break_client_requests(service):
    standard = {"fields": "id,kind", "prettyPrint": False, "quotaUser": "someone", "key": "api-key"}
    task = (
        service.tasks()
        .insert(project=PROJECT, taskqueue=QUEUE, body={"payloadBase64": b64(b"x"), "id": "t1"}, **standard)
        .execute()
    )
    assert task["id"] == "t1"
    assert [t["id"] for t in lease(service, **standard)["items"]] == ["t1"]


def test_standard_and_unknown_query_parameters_are_ignored(emulator, service):
    insert(service, id="t1")
    query = "alt=json&fields=items(id)&prettyPrint=false&quotaUser=u&key=k&oauth_token=t&unknownParam=1"
    response = raw_http.request(emulator, "GET", api_path("tasks") + "?" + query)
    assert response.status == 200
    assert [task["id"] for task in response.json()["items"]] == ["t1"]
