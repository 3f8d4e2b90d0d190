"""Requests of the dashboard's page, data and actions, and of the API to fill the queues it shows,
over real HTTP (:mod:`tests.support.raw_http`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kombu_appengine.dashboard.app import CSRF_HEADER, DATA_PATH, DELETE_PATH, PURGE_PATH
from tests.support.api import api_path
from tests.support.helpers import b64
from tests.support.raw_http import Answer, Server, post_json, request

#: Actions by name.
ACTIONS = {"delete": DELETE_PATH, "purge": PURGE_PATH}


def page_token(server: Server) -> str:
    """The CSRF token the server put in its page."""
    answer = request(server, "GET", "/")
    assert answer.status == 200, answer.body[:300]
    match = re.search(rb'<meta name="dashboard-csrf" content="([^"]*)">', answer.body)
    assert match is not None, answer.body[:500]
    return match.group(1).decode()


def data(server: Server, token: str | None = None) -> Answer:
    """``GET /dashboard/api/queues``, with a bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(server, "GET", DATA_PATH, headers=headers)


def queue_view(document: dict[str, Any], queue: str, project: str | None) -> dict[str, Any]:
    """One queue of the data, in the group of ``project``."""
    [group] = [group for group in document["projects"] if group["project"] == project]
    [view] = [view for view in group["queues"] if view["name"] == queue]
    return view


def act(
    server: Server,
    action: str,
    document: Any,
    csrf: str | None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """An action as the page sends it: JSON, from the server's own origin, with ``csrf`` (if any)."""
    sent = {"Origin": f"http://{server.host}", "Sec-Fetch-Site": "same-origin", **(headers or {})}
    if csrf is not None:
        sent[CSRF_HEADER] = csrf
    return post_json(server, ACTIONS[action], document, sent)


def insert(
    server: Server,
    payload: bytes,
    project: str,
    queue: str,
    headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``tasks.insert`` over HTTP; the task resource."""
    body = {"payloadBase64": b64(payload), **fields}
    answer = post_json(server, api_path("tasks", project=project, queue=queue), body, headers)
    assert answer.status == 200, answer.body[:300]
    return dict(answer.json())


def lease(server: Server, project: str, queue: str, num_tasks: int, lease_secs: int = 600) -> list[str]:
    """``tasks.lease`` over HTTP; the names leased."""
    path = api_path(
        "tasks", f"lease?numTasks={num_tasks}&leaseSecs={lease_secs}", project=project, queue=queue
    )
    answer = request(server, "POST", path)
    assert answer.status == 200, answer.body[:300]
    return [task["id"] for task in answer.json().get("items", [])]


def task_ids(server: Server, project: str, queue: str) -> list[str]:
    """``tasks.list`` over HTTP: the names of the queue's tasks (the first 100)."""
    answer = request(server, "GET", api_path("tasks", project=project, queue=queue))
    assert answer.status == 200, answer.body[:300]
    return [task["id"] for task in answer.json().get("items", [])]


def exists(server: Server, project: str, queue: str, task: str) -> bool:
    """Whether ``tasks.get`` finds the task."""
    answer = request(server, "GET", api_path("tasks", task, project=project, queue=queue))
    assert answer.status in (200, 404), answer.body[:300]
    return answer.status == 200


def as_json(answer: Answer) -> Any:
    assert answer.status == 200, answer.body[:300]
    return json.loads(answer.body)
