"""The batch endpoint, through google-api-python-client's batch requests and
through hand-made ``multipart/mixed`` bodies."""

import email.parser
import email.policy
import json

import pytest

from tests.support import raw_http
from tests.support.api import PROJECT, QUEUE, api_path, assert_google_error, insert, list_ids, stats
from tests.support.helpers import b64

#: Separator of the hand-made batch bodies.
BOUNDARY = "test_boundary_42"


# -- google-api-python-client's batches ---------------------------------------


def run_batch(service, requests):
    """Send ``requests`` (request id -> HttpRequest) as one batch.

    Returns request id -> ``(response, exception)`` as the callback got them.
    """
    results = {}

    def callback(request_id, response, exception):
        assert request_id not in results
        results[request_id] = (response, exception)

    batch = service.new_batch_http_request(callback=callback)
    for request_id, request in requests.items():
        batch.add(request, request_id=request_id)
    batch.execute()
    assert results.keys() == requests.keys()
    return results


def failure(result):
    """The status and reason of a failed batch result."""
    response, exception = result
    assert response is None
    assert exception is not None
    error = json.loads(exception.content)
    assert_google_error(error, exception.resp.status)
    return exception.resp.status, error["error"]["errors"][0]["reason"]


def success(result):
    response, exception = result
    assert exception is None
    return response


def test_each_part_succeeds_or_fails_on_its_own(service):
    insert(service, b"old", id="existing")
    tasks = service.tasks()
    results = run_batch(
        service,
        {
            "new": tasks.insert(
                project=PROJECT, taskqueue=QUEUE, body={"id": "fresh", "payloadBase64": b64(b"new")}
            ),
            "duplicate": tasks.insert(project=PROJECT, taskqueue=QUEUE, body={"id": "existing"}),
            "missing": tasks.get(project=PROJECT, taskqueue=QUEUE, task="missing"),
            "existing": tasks.get(project=PROJECT, taskqueue=QUEUE, task="existing"),
            "queue": service.taskqueues().get(project=PROJECT, taskqueue=QUEUE),
            "no-queue": tasks.insert(project=PROJECT, taskqueue="nosuch", body={}),
            "bad-lease": tasks.lease(project=PROJECT, taskqueue=QUEUE, numTasks=0, leaseSecs=1),
        },
    )
    assert success(results["new"])["id"] == "fresh"
    assert success(results["new"])["payloadBase64"] == b64(b"new")
    assert failure(results["duplicate"]) == (409, "alreadyExists")
    assert failure(results["missing"]) == (404, "notFound")
    assert success(results["existing"])["payloadBase64"] == b64(b"old")
    assert success(results["queue"])["kind"] == "taskqueues#taskqueue"
    assert failure(results["no-queue"]) == (404, "notFound")
    assert failure(results["bad-lease"])[0] == 400
    assert sorted(list_ids(service)) == ["existing", "fresh"]


def test_a_batch_lease_leases(service):
    insert(service, id="t1")
    [task] = success(
        run_batch(
            service,
            {
                "lease": service.tasks().lease(project=PROJECT, taskqueue=QUEUE, numTasks=5, leaseSecs=60),
            },
        )["lease"]
    )["items"]
    assert (task["id"], task["retry_count"]) == ("t1", 1)


def test_batch_lease_changes(service, clock):
    for name in ("t1", "t2", "t3"):
        insert(service, id=name)
    service.tasks().lease(project=PROJECT, taskqueue=QUEUE, numTasks=3, leaseSecs=60).execute()
    body = {"queueName": QUEUE}
    common = {"project": PROJECT, "taskqueue": QUEUE, "body": body}
    results = run_batch(
        service,
        {
            "update": service.tasks().update(task="t1", newLeaseSeconds=0, **common),
            "patch": service.tasks().patch(task="t2", newLeaseSeconds=0, **common),
            "unknown": service.tasks().patch(task="never", newLeaseSeconds=0, **common),
        },
    )
    assert success(results["update"])["leaseTimestamp"] == "0"
    assert success(results["patch"])["leaseTimestamp"] == "0"
    assert failure(results["unknown"]) == (404, "notFound")
    # A released task is due from the moment of its release: leasable just after it.
    clock.advance(1)
    leased = service.tasks().lease(project=PROJECT, taskqueue=QUEUE, numTasks=3, leaseSecs=60).execute()
    assert sorted(task["id"] for task in leased["items"]) == ["t1", "t2"]


def test_batch_deletes(service):
    names = ["t1", "t2", "t3"]
    for name in names:
        insert(service, id=name)
    requests = {
        name: service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task=name)
        for name in [*names, "never"]
    }
    results = run_batch(service, requests)
    assert [success(results[name]) for name in names] == ["", "", ""]
    assert failure(results["never"]) == (404, "notFound")
    assert list_ids(service) == []


def test_two_deletes_of_one_task_in_a_batch_delete_it_once(service):
    # Each part on its own, as if sent one by one: the first deletes, the other finds nothing.
    insert(service, id="t1")
    requests = {
        part: service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="t1") for part in ("a", "b")
    }
    results = run_batch(service, requests)
    outcomes = [None if results[part][1] is None else failure(results[part]) for part in "ab"]
    assert outcomes in ([None, (404, "notFound")], [(404, "notFound"), None])
    assert list_ids(service) == []


def test_a_batch_of_1000_parts(service):
    requests = {
        f"part-{number}": service.tasks().insert(
            project=PROJECT,
            taskqueue=QUEUE,
            body={"id": f"task-{number}", "payloadBase64": b64(b"%d" % number)},
        )
        for number in range(1000)
    }
    results = run_batch(service, requests)
    for number in range(1000):
        task = success(results[f"part-{number}"])
        assert (task["id"], task["payloadBase64"]) == (f"task-{number}", b64(b"%d" % number))
    assert stats(service)["totalTasks"] == 1000


# -- hand-made multipart bodies -----------------------------------------------


def http_request(method, target, document=None, newline="\r\n"):
    """One HTTP request as a batch part carries it."""
    lines = [f"{method} {target} HTTP/1.1"]
    body = b""
    if document is not None:
        body = json.dumps(document).encode("utf-8")
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return (newline.join(lines) + newline + newline).encode("ascii") + body


def multipart(parts):
    """A ``multipart/mixed`` body of ``(content_id or None, request)`` parts."""
    chunks = []
    for content_id, request in parts:
        head = [f"--{BOUNDARY}", "Content-Type: application/http"]
        if content_id is not None:
            head.append(f"Content-ID: {content_id}")
        chunks.append(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + request + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode("ascii"))
    return b"".join(chunks)


def post_batch(emulator, parts, path="/batch", headers=None):
    headers = {"Content-Type": f"multipart/mixed; boundary={BOUNDARY}", **(headers or {})}
    return raw_http.request(emulator, "POST", path, multipart(parts), headers)


class Answer:
    """One part of a batch response: its Content-ID and the HTTP response it holds."""

    def __init__(self, content_id, status_line, headers, body):
        self.content_id = content_id
        self.status_line = status_line
        self.status = int(status_line.split()[1])
        self.headers = headers
        self.body = body

    def json(self):
        assert self.headers["content-type"].startswith("application/json")
        return json.loads(self.body)


def answers(response):
    """The parts of a batch response, in the order they came."""
    assert response.status == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/mixed; boundary=")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + response.body
    )
    assert message.is_multipart()
    assert not message.defects
    return [parse_answer(part) for part in message.get_payload()]


def parse_answer(part):
    assert part.get_content_type() == "application/http"
    payload = part.get_payload(decode=True)
    head, separator, body = payload.partition(b"\r\n\r\n")
    assert separator, payload
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return Answer(part.get("Content-ID"), status_line, headers, body)


def answers_by_id(response):
    found = answers(response)
    by_id = {answer.content_id: answer for answer in found}
    assert len(by_id) == len(found)
    return by_id


@pytest.mark.parametrize("path", ["/batch", "/batch/taskqueue/v1beta2"])
def test_both_batch_paths_answer(emulator, path):
    response = post_batch(
        emulator,
        [
            ("<1>", http_request("POST", api_path("tasks"), {"id": "t1", "payloadBase64": b64(b"x")})),
            ("<2>", http_request("GET", api_path("tasks", "missing"))),
        ],
        path=path,
    )
    by_id = answers_by_id(response)
    assert by_id.keys() == {"<response-1>", "<response-2>"}
    assert by_id["<response-1>"].status_line == "HTTP/1.1 200 OK"
    assert by_id["<response-1>"].json()["id"] == "t1"
    assert by_id["<response-2>"].status == 404
    assert_google_error(by_id["<response-2>"].json(), 404, "notFound")


def test_content_ids_are_echoed_as_response_ids(emulator):
    response = post_batch(
        emulator,
        [
            ("<batch123+1>", http_request("GET", api_path())),
            ("plain", http_request("GET", api_path())),
            (None, http_request("GET", api_path())),
        ],
    )
    assert sorted(answer.content_id or "" for answer in answers(response)) == [
        "",
        "<response-batch123+1>",
        "<response-plain>",
    ]


def test_a_part_without_content_id_gets_none_back(emulator):
    [answer] = answers(post_batch(emulator, [(None, http_request("GET", api_path()))]))
    assert answer.content_id is None
    assert answer.json()["id"] == QUEUE


def test_inner_request_lines_may_end_in_lf_only(emulator, service):
    response = post_batch(
        emulator,
        [
            ("<a>", http_request("POST", api_path("tasks"), {"id": "lf-only"}, newline="\n")),
            ("<b>", http_request("GET", api_path("tasks"), newline="\n")),
        ],
    )
    by_id = answers_by_id(response)
    assert by_id["<response-a>"].json()["id"] == "lf-only"
    assert by_id["<response-b>"].status == 200
    assert list_ids(service) == ["lf-only"]


def test_a_request_line_may_carry_the_absolute_url(emulator):
    [answer] = answers(post_batch(emulator, [("<a>", http_request("GET", emulator.url + api_path()))]))
    assert answer.json()["id"] == QUEUE


def test_a_delete_part_is_204_with_a_content_length(emulator, service):
    insert(service, id="t1")
    [answer] = answers(post_batch(emulator, [("<d>", http_request("DELETE", api_path("tasks", "t1")))]))
    assert answer.status_line == "HTTP/1.1 204 No Content"
    assert (answer.headers["content-length"], answer.body) == ("0", b"")
    assert list_ids(service) == []


def test_query_parameters_of_a_part_are_read(emulator, service):
    insert(service, id="t1")
    insert(service, id="t2")
    [answer] = answers(
        post_batch(
            emulator,
            [
                (
                    "<l>",
                    http_request("POST", api_path("tasks", "lease") + "?numTasks=1&leaseSecs=30&alt=json"),
                ),
            ],
        )
    )
    assert [task["id"] for task in answer.json()["items"]] == ["t1"]


def test_a_malformed_part_fails_alone(emulator, service):
    response = post_batch(
        emulator,
        [
            ("<bad>", b"this is not an HTTP request\r\n\r\n"),
            ("<good>", http_request("POST", api_path("tasks"), {"id": "t1"})),
        ],
    )
    by_id = answers_by_id(response)
    assert by_id["<response-bad>"].status == 400
    assert_google_error(by_id["<response-bad>"].json(), 400)
    assert by_id["<response-good>"].status == 200
    assert list_ids(service) == ["t1"]


def test_1001_parts_are_refused(emulator, service):
    parts = [(f"<{number}>", http_request("POST", api_path("tasks"), {})) for number in range(1001)]
    response = post_batch(emulator, parts)
    assert response.status == 400
    assert "1000" in assert_google_error(response.json(), 400)
    assert stats(service)["totalTasks"] == 0


def test_a_body_that_is_not_multipart_is_400(emulator):
    response = raw_http.request(emulator, "POST", "/batch", b"{}", {"Content-Type": "application/json"})
    assert response.status == 400
    assert_google_error(response.json(), 400)


def test_the_token_of_the_batch_serves_its_parts(make_server):
    running = make_server(queues=[QUEUE], require_auth=True)
    parts = [("<q>", http_request("GET", api_path()))]
    refused = post_batch(running, parts)
    assert refused.status == 401
    assert_google_error(refused.json(), 401, "required")
    [answer] = answers(post_batch(running, parts, headers={"Authorization": "Bearer outer"}))
    assert answer.status == 200
    assert "outer" in running.tokens
