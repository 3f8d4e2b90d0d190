"""The API facts module agrees with the shipped discovery document, and its codecs hold."""

from __future__ import annotations

import base64

import pytest

from kombu_appengine import api
from kombu_appengine.discovery import load_document
from kombu_appengine.emulator.errors import ApiError
from kombu_appengine.emulator.rest import resolve


def discovery_methods() -> dict[str, tuple[str, str]]:
    """Every method of the shipped document: id -> (verb, path)."""
    found = {}
    for resource in load_document()["resources"].values():
        for method in resource["methods"].values():
            found[method["id"]] = (method["httpMethod"], method["path"])
    return found


def test_methods_are_those_of_the_discovery_document() -> None:
    assert {method.id: (method.http_method, method.path) for method in api.METHODS} == discovery_methods()


def test_paths_are_those_of_the_discovery_document() -> None:
    document = load_document()
    assert document["rootUrl"] == api.GOOGLE_ROOT_URL
    assert "/" + document["servicePath"] == api.SERVICE_PATH
    assert "/" + document["batchPath"] in api.BATCH_PATHS
    assert set(document["auth"]["oauth2"]["scopes"]) == {api.TASKQUEUE_SCOPE, api.TASKQUEUE_CONSUMER_SCOPE}


@pytest.mark.parametrize(
    ("verb", "path", "method_id", "params"),
    [
        ("GET", "p/taskqueues/q", "taskqueue.taskqueues.get", {"project": "p", "taskqueue": "q"}),
        ("POST", "p/taskqueues/q/tasks", "taskqueue.tasks.insert", {"project": "p", "taskqueue": "q"}),
        ("GET", "p/taskqueues/q/tasks", "taskqueue.tasks.list", {"project": "p", "taskqueue": "q"}),
        ("POST", "p/taskqueues/q/tasks/lease", "taskqueue.tasks.lease", {"project": "p", "taskqueue": "q"}),
        # A task named "lease" is still reachable by every verb but POST.
        (
            "GET",
            "p/taskqueues/q/tasks/lease",
            "taskqueue.tasks.get",
            {"project": "p", "taskqueue": "q", "task": "lease"},
        ),
        (
            "DELETE",
            "s~p/taskqueues/q/tasks/t%2D1",
            "taskqueue.tasks.delete",
            {"project": "s~p", "taskqueue": "q", "task": "t-1"},
        ),
        (
            "POST",
            "p/taskqueues/q/tasks/t",
            "taskqueue.tasks.update",
            {"project": "p", "taskqueue": "q", "task": "t"},
        ),
        (
            "PATCH",
            "p/taskqueues/q/tasks/t",
            "taskqueue.tasks.patch",
            {"project": "p", "taskqueue": "q", "task": "t"},
        ),
    ],
)
def test_requests_resolve_to_their_method_id(verb: str, path: str, method_id: str, params: dict) -> None:
    method, found = resolve(verb, api.SERVICE_PATH + path)
    assert method.id == method_id
    assert found == params


@pytest.mark.parametrize(
    ("verb", "path", "status"),
    [
        ("PUT", "p/taskqueues/q", 405),
        ("DELETE", "p/taskqueues/q/tasks", 405),
        ("GET", "p/taskqueues/q/other", 404),
        ("GET", "p/taskqueues/q/tasks/", 404),
        ("GET", "p/taskqueues//tasks", 404),
        ("GET", "p/queues/q", 404),
        ("GET", "p/taskqueues/q/tasks/t/more", 404),
    ],
)
def test_unknown_paths_and_verbs_are_refused(verb: str, path: str, status: int) -> None:
    with pytest.raises(ApiError) as refused:
        resolve(verb, api.SERVICE_PATH + path)
    assert refused.value.code == status


@pytest.mark.parametrize("payload", [b"", b"x", b"\x00\xff\xfe binary", bytes(range(256)) * 3])
def test_payloads_round_trip_through_the_codec(payload: bytes) -> None:
    text = api.encode_payload(payload)
    assert text == base64.b64encode(payload).decode("ascii")
    assert api.decode_payload(text) == payload


def test_decoding_accepts_url_safe_unpadded_and_spaced_base64() -> None:
    payload = b"\xfb\xff\xbf?>"
    assert api.decode_payload(base64.urlsafe_b64encode(payload).decode().rstrip("=")) == payload
    assert api.decode_payload(" ".join(base64.b64encode(payload).decode())) == payload


@pytest.mark.parametrize("text", ["*not base64*", "a", "ab=c"])
def test_decoding_refuses_what_is_not_base64(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        api.decode_payload(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)],
)
def test_booleans_as_the_api_spells_them(text: str, value: bool) -> None:
    assert api.parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "yes", "maybe", " true", "2"])
def test_other_booleans_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="true or false"):
        api.parse_bool(text)


@pytest.mark.parametrize(
    ("project", "bare"),
    [("my-app", "my-app"), ("s~my-app", "my-app"), ("e~my-app", "my-app"), ("x~a", "x~a")],
)
def test_bare_project(project: str, bare: str) -> None:
    assert api.bare_project(project) == bare


def test_name_patterns_hold_the_limits() -> None:
    assert api.QUEUE_NAME_RE.match("a" * api.MAX_QUEUE_NAME)
    assert not api.QUEUE_NAME_RE.match("a" * (api.MAX_QUEUE_NAME + 1))
    assert not api.QUEUE_NAME_RE.match("a_b")
    assert api.TASK_NAME_RE.match("a_b-" + "c" * 496)
    assert not api.TASK_NAME_RE.match("c" * 501)
    assert api.LONG_QUEUE_NAME_RE.match(api.long_queue_name("s~p", "q")).groups() == ("s~p", "q")
