"""The shipped discovery document, as google-api-python-client reads it.

Requests are only built, never executed: these tests need no server.
"""

from __future__ import annotations

import json
import urllib.parse

import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import DISCOVERY_PATH, document_json, load_document

GOOGLE_BASE = "https://www.googleapis.com/taskqueue/v1beta2/projects/"
EMULATOR_ROOT = "http://127.0.0.1:1234/"
EMULATOR_BASE = EMULATOR_ROOT + "taskqueue/v1beta2/projects/"
FULL_SCOPE = "https://www.googleapis.com/auth/taskqueue"
CONSUMER_SCOPE = "https://www.googleapis.com/auth/taskqueue.consumer"

TASK_METHODS = ("delete", "get", "insert", "lease", "list", "patch", "update")


def build(root_url: str | None = None):
    return build_from_document(load_document(root_url), http=httplib2.Http())


def split(uri: str) -> tuple[str, dict[str, list[str]]]:
    """The URI without its query, and the query without the client's ``alt``."""
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    query.pop("alt", None)
    return urllib.parse.urlunsplit(parts._replace(query="")), query


# (resource, method, kwargs, HTTP method, path under the base, query, JSON body)
REQUESTS = [
    (
        "taskqueues",
        "get",
        {"project": "s~app", "taskqueue": "pull", "getStats": True},
        "GET",
        "s~app/taskqueues/pull",
        {"getStats": ["true"]},
        None,
    ),
    (
        "taskqueues",
        "get",
        {"project": "app", "taskqueue": "pull"},
        "GET",
        "app/taskqueues/pull",
        {},
        None,
    ),
    (
        "tasks",
        "insert",
        {"project": "app", "taskqueue": "pull", "body": {"payloadBase64": "aGk=", "tag": "t"}},
        "POST",
        "app/taskqueues/pull/tasks",
        {},
        {"payloadBase64": "aGk=", "tag": "t"},
    ),
    (
        "tasks",
        "lease",
        {"project": "app", "taskqueue": "pull", "numTasks": 10, "leaseSecs": 60},
        "POST",
        "app/taskqueues/pull/tasks/lease",
        {"numTasks": ["10"], "leaseSecs": ["60"]},
        None,
    ),
    (
        "tasks",
        "lease",
        {
            "project": "app",
            "taskqueue": "pull",
            "numTasks": 1,
            "leaseSecs": 0,
            "groupByTag": True,
            "tag": "a tag",
        },
        "POST",
        "app/taskqueues/pull/tasks/lease",
        {"numTasks": ["1"], "leaseSecs": ["0"], "groupByTag": ["true"], "tag": ["a tag"]},
        None,
    ),
    (
        "tasks",
        "get",
        {"project": "app", "taskqueue": "pull", "task": "t-1"},
        "GET",
        "app/taskqueues/pull/tasks/t-1",
        {},
        None,
    ),
    (
        "tasks",
        "list",
        {"project": "app", "taskqueue": "pull"},
        "GET",
        "app/taskqueues/pull/tasks",
        {},
        None,
    ),
    (
        "tasks",
        "delete",
        {"project": "app", "taskqueue": "pull", "task": "t-1"},
        "DELETE",
        "app/taskqueues/pull/tasks/t-1",
        {},
        None,
    ),
    (
        "tasks",
        "update",
        {
            "project": "app",
            "taskqueue": "pull",
            "task": "t_1",
            "newLeaseSeconds": 0,
            "body": {"queueName": "pull"},
        },
        "POST",
        "app/taskqueues/pull/tasks/t_1",
        {"newLeaseSeconds": ["0"]},
        {"queueName": "pull"},
    ),
    (
        "tasks",
        "patch",
        {
            "project": "app",
            "taskqueue": "pull",
            "task": "t_1",
            "newLeaseSeconds": 30,
            "body": {"queueName": "pull"},
        },
        "PATCH",
        "app/taskqueues/pull/tasks/t_1",
        {"newLeaseSeconds": ["30"]},
        {"queueName": "pull"},
    ),
]


def test_build_exposes_every_method(shipped_service):
    assert callable(shipped_service.taskqueues().get)
    for name in TASK_METHODS:
        assert callable(getattr(shipped_service.tasks(), name)), name
    assert not hasattr(shipped_service.taskqueues(), "insert")


@pytest.mark.parametrize(
    ("resource", "method", "kwargs", "http_method", "path", "query", "body"),
    REQUESTS,
    ids=[f"{r[0]}.{r[1]}-{i}" for i, r in enumerate(REQUESTS)],
)
def test_request_matches_the_api(shipped_service, resource, method, kwargs, http_method, path, query, body):
    request = getattr(getattr(shipped_service, resource)(), method)(**kwargs)
    uri, actual_query = split(request.uri)
    assert request.method == http_method
    assert uri == GOOGLE_BASE + path
    assert actual_query == query
    if body is None:
        assert request.body is None
    else:
        assert json.loads(request.body) == body
        assert request.headers["content-type"] == "application/json"


def test_json_methods_ask_for_alt_json_but_delete_does_not(shipped_service):
    # delete has no response schema, so the client reads the body raw.
    lease = shipped_service.tasks().lease(project="a", taskqueue="q", numTasks=1, leaseSecs=1)
    delete = shipped_service.tasks().delete(project="a", taskqueue="q", task="t")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(lease.uri).query)["alt"] == ["json"]
    assert "alt" not in urllib.parse.parse_qs(urllib.parse.urlsplit(delete.uri).query)


def test_project_with_a_domain_is_percent_encoded_in_the_path(shipped_service):
    request = shipped_service.tasks().get(project="example.com:app", taskqueue="pull", task="t")
    uri, _ = split(request.uri)
    assert uri == GOOGLE_BASE + "example.com%3Aapp/taskqueues/pull/tasks/t"


@pytest.mark.parametrize(
    ("method", "kwargs", "missing"),
    [
        ("lease", {"project": "a", "taskqueue": "q", "leaseSecs": 60}, "numTasks"),
        ("lease", {"project": "a", "taskqueue": "q", "numTasks": 1}, "leaseSecs"),
        ("update", {"project": "a", "taskqueue": "q", "task": "t", "body": {}}, "newLeaseSeconds"),
        ("patch", {"project": "a", "taskqueue": "q", "task": "t", "body": {}}, "newLeaseSeconds"),
        ("get", {"project": "a", "taskqueue": "q"}, "task"),
        ("delete", {"project": "a", "task": "t"}, "taskqueue"),
        ("insert", {"taskqueue": "q", "body": {}}, "project"),
        ("list", {"project": "a"}, "taskqueue"),
    ],
)
def test_required_parameters_are_enforced(shipped_service, method, kwargs, missing):
    with pytest.raises(TypeError, match=f'"{missing}"'):
        getattr(shipped_service.tasks(), method)(**kwargs)


def test_taskqueues_get_requires_the_queue(shipped_service):
    with pytest.raises(TypeError, match='"taskqueue"'):
        shipped_service.taskqueues().get(project="a")


def test_unknown_parameters_are_refused(shipped_service):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        shipped_service.tasks().list(project="a", taskqueue="q", numTasks=1)


def test_standard_parameters_are_accepted(shipped_service):
    request = shipped_service.tasks().list(
        project="a", taskqueue="q", fields="items/id", prettyPrint=False, quotaUser="u"
    )
    _, query = split(request.uri)
    assert query == {"fields": ["items/id"], "prettyPrint": ["false"], "quotaUser": ["u"]}


def test_default_batch_url_is_googles():
    assert build().new_batch_http_request()._batch_uri == "https://www.googleapis.com/batch"


@pytest.mark.parametrize("root_url", [EMULATOR_ROOT, EMULATOR_ROOT.rstrip("/")])
def test_root_url_moves_requests_and_batch(root_url):
    service = build(root_url)
    requests = [service.taskqueues().get(project="a", taskqueue="q")] + [
        getattr(service.tasks(), r[1])(**r[2]) for r in REQUESTS if r[0] == "tasks"
    ]
    for request in requests:
        assert request.uri.startswith(EMULATOR_BASE), request.uri
    lease = service.tasks().lease(project="a", taskqueue="q", numTasks=2, leaseSecs=5)
    uri, query = split(lease.uri)
    assert uri == EMULATOR_BASE + "a/taskqueues/q/tasks/lease"
    assert query == {"numTasks": ["2"], "leaseSecs": ["5"]}
    assert service.new_batch_http_request()._batch_uri == EMULATOR_ROOT + "batch"


def test_root_url_keeps_base_fields_consistent():
    document = load_document("http://localhost:8080/prefix")
    assert document["rootUrl"] == "http://localhost:8080/prefix/"
    assert document["baseUrl"] == "http://localhost:8080/prefix/taskqueue/v1beta2/projects/"
    assert document["basePath"] == "/prefix/taskqueue/v1beta2/projects/"
    assert document["servicePath"] == "taskqueue/v1beta2/projects/"


@pytest.mark.parametrize("bad", ["", "127.0.0.1:1234", "ftp://host/", "http://host/?a=1"])
def test_root_url_must_be_an_http_url(bad):
    with pytest.raises(ValueError, match="root_url"):
        load_document(bad)


def test_default_document_points_at_google():
    document = load_document()
    assert document["rootUrl"] == "https://www.googleapis.com/"
    assert document["baseUrl"] == document["rootUrl"] + document["servicePath"] == GOOGLE_BASE
    assert document["basePath"] == "/taskqueue/v1beta2/projects/"
    assert document["batchPath"] == "batch"
    assert "mtlsRootUrl" not in document


def test_copies_are_independent():
    first = load_document()
    first["rootUrl"] = "http://changed/"
    first["schemas"]["Task"]["properties"].clear()
    second = load_document()
    assert second["rootUrl"] == "https://www.googleapis.com/"
    assert "payloadBase64" in second["schemas"]["Task"]["properties"]
    assert second is not load_document()


def test_building_a_service_does_not_alter_later_documents():
    # The client adds the global parameters into the document it was given,
    # lazily, as methods are created.
    document = load_document()
    build_from_document(document, http=httplib2.Http()).tasks().list(project="a", taskqueue="q")
    assert "alt" in document["resources"]["tasks"]["methods"]["list"]["parameters"]
    fresh = load_document()["resources"]["tasks"]["methods"]["list"]["parameters"]
    assert set(fresh) == {"project", "taskqueue"}


def test_document_json_serializes_the_same_document():
    assert json.loads(document_json()) == load_document()
    assert json.loads(document_json(EMULATOR_ROOT)) == load_document(EMULATOR_ROOT)
    assert json.loads(document_json(EMULATOR_ROOT))["rootUrl"] == EMULATOR_ROOT


def test_discovery_path():
    assert DISCOVERY_PATH == "/discovery/v1/apis/taskqueue/v1beta2/rest"


def test_identity_and_standard_parameters():
    document = load_document()
    assert document["kind"] == "discovery#restDescription"
    assert document["id"] == "taskqueue:v1beta2"
    assert (document["name"], document["version"]) == ("taskqueue", "v1beta2")
    assert document["protocol"] == "rest"
    assert set(document["parameters"]) == {
        "alt",
        "fields",
        "key",
        "oauth_token",
        "prettyPrint",
        "quotaUser",
        "userIp",
    }
    assert document["parameters"]["alt"]["enum"] == ["json"]
    assert set(document["auth"]["oauth2"]["scopes"]) == {FULL_SCOPE, CONSUMER_SCOPE}


def test_method_ids_and_scopes():
    resources = load_document()["resources"]
    methods = {"taskqueues." + n: m for n, m in resources["taskqueues"]["methods"].items()}
    methods.update({"tasks." + n: m for n, m in resources["tasks"]["methods"].items()})
    assert set(methods) == {"taskqueues.get"} | {"tasks." + n for n in TASK_METHODS}
    for name, method in methods.items():
        assert method["id"] == "taskqueue." + name
        assert method["parameterOrder"][:2] == ["project", "taskqueue"]
        # As in Google's document: the service, not the scope, kept consumers
        # from inserting (through the queue's ACL).
        assert method["scopes"] == [FULL_SCOPE, CONSUMER_SCOPE], name
    assert methods["tasks.lease"]["parameterOrder"] == [
        "project",
        "taskqueue",
        "numTasks",
        "leaseSecs",
    ]
    for name in ("tasks.update", "tasks.patch"):
        assert methods[name]["parameterOrder"] == [
            "project",
            "taskqueue",
            "task",
            "newLeaseSeconds",
        ]
        assert methods[name]["request"] == methods[name]["response"] == {"$ref": "Task"}
    assert methods["tasks.lease"]["response"] == {"$ref": "Tasks"}
    assert methods["tasks.list"]["response"] == {"$ref": "Tasks2"}
    assert methods["taskqueues.get"]["response"] == {"$ref": "TaskQueue"}
    assert "response" not in methods["tasks.delete"]


def test_integer_parameters_are_int32():
    tasks = load_document()["resources"]["tasks"]["methods"]
    for method, name in [
        ("lease", "numTasks"),
        ("lease", "leaseSecs"),
        ("update", "newLeaseSeconds"),
        ("patch", "newLeaseSeconds"),
    ]:
        parameter = tasks[method]["parameters"][name]
        assert (parameter["type"], parameter["format"]) == ("integer", "int32")
        assert parameter["required"] is True
        assert parameter["location"] == "query"


def test_schema_types_and_units():
    schemas = load_document()["schemas"]
    task = schemas["Task"]["properties"]
    for name in ("enqueueTimestamp", "leaseTimestamp"):
        assert (task[name]["type"], task[name]["format"]) == ("string", "int64")
        assert "microseconds" in task[name]["description"]
    assert (task["retry_count"]["type"], task["retry_count"]["format"]) == ("integer", "int32")
    queue = schemas["TaskQueue"]["properties"]
    assert (queue["maxLeases"]["type"], queue["maxLeases"]["format"]) == ("integer", "int32")
    assert set(queue["acl"]["properties"]) == {"adminEmails", "consumerEmails", "producerEmails"}
    stats = queue["stats"]["properties"]
    assert (stats["totalTasks"]["type"], stats["totalTasks"]["format"]) == ("integer", "int32")
    for name in ("oldestTask", "leasedLastMinute", "leasedLastHour"):
        assert (stats[name]["type"], stats[name]["format"]) == ("string", "int64")
    assert "seconds since the epoch" in stats["oldestTask"]["description"]
    assert "microseconds" not in stats["oldestTask"]["description"]
    assert schemas["Tasks"]["properties"]["kind"]["default"] == "taskqueue#tasks"
    assert schemas["Tasks2"]["properties"]["kind"]["default"] == "taskqueues#tasks"
    for name in ("Tasks", "Tasks2"):
        assert schemas[name]["properties"]["items"]["items"] == {"$ref": "Task"}
