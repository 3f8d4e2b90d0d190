"""The dashboard over real HTTP: its page, its data on both servers, and the emulator's actions,
refused to anything but the page the server served (CSRF)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from kombu_appengine.dashboard.app import DATA_PATH, DELETE_PATH, PURGE_PATH, TASKS_SHOWN
from kombu_appengine.dashboard.preview import PREVIEW_CHARS
from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer
from kombu_appengine.gateway.local import LocalGateway
from tests.dashboard.conftest import APP, QUEUES, ROBOT
from tests.support.dashboard import (
    act,
    as_json,
    data,
    exists,
    insert,
    lease,
    page_token,
    queue_view,
    task_ids,
)
from tests.support.helpers import MakeEmulator
from tests.support.oauth_server import OAuthServer
from tests.support.raw_http import assert_google_error, request

# -- the page ----------------------------------------------------------------------


def test_the_page_its_script_and_style_are_served_with_headers_that_keep_it_safe(server: RestServer):
    page = request(server, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.body.startswith(b"<!DOCTYPE html>")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    script = request(server, "GET", "/dashboard/dashboard.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"textContent" in script.body
    assert b"innerHTML" not in script.body
    style = request(server, "GET", "/dashboard/dashboard.css")
    assert style.status == 200
    assert style.headers["content-type"].startswith("text/css")


def test_an_unknown_page_is_404_and_another_verb_405(server: RestServer):
    assert_google_error(request(server, "GET", "/dashboard/nothing"), 404, "dashboard")
    assert_google_error(request(server, "POST", "/", b"{}", {"Content-Type": "application/json"}), 405)
    assert_google_error(request(server, "GET", DELETE_PATH), 405)
    assert_google_error(request(server, "DELETE", DATA_PATH), 405)


def test_the_emulator_page_offers_actions_and_the_gateway_page_does_not(make_emulator: MakeEmulator):
    emulator = make_emulator(queues=["pull-queue"])
    assert b'<meta name="dashboard-mode" content="actions">' in request(emulator, "GET", "/").body
    assert len(page_token(emulator)) >= 40
    with LocalGateway(["pull-queue"]) as gateway:
        body = request(gateway, "GET", "/").body
        assert b'<meta name="dashboard-mode" content="read-only">' in body
        assert page_token(gateway) == ""
        assert as_json(data(gateway))["actions"] is False


# -- the data ----------------------------------------------------------------------


def test_the_data_shows_each_queue_with_its_stats_and_tasks(server: RestServer):
    first = insert(server, b'{"n": 1}', APP, "pull-queue", tag="images")
    insert(server, b"\xff\x00binary", APP, "pull-queue")
    insert(server, b"plain text", APP, "pull-queue")
    [leased] = lease(server, APP, "pull-queue", 1)
    assert leased == first["id"]

    document = as_json(data(server))
    assert document["actions"] is isinstance(server, Emulator)
    assert document["hidden"] == 0
    assert [group["project"] for group in document["projects"]] == [APP]
    [group] = document["projects"]
    assert [view["name"] for view in group["queues"]] == sorted(
        config if isinstance(config, str) else config.name for config in QUEUES
    )
    view = queue_view(document, "pull-queue", APP)
    assert view["totalTasks"] == 3
    assert view["leasedNow"] == 1
    assert view["leasedLastMinute"] == view["leasedLastHour"] == 1
    assert 0 < view["oldestTask"] <= document["now"]
    assert view["maxLeases"] is None
    assert queue_view(document, "limited", APP)["maxLeases"] == 3
    tasks = {task["preview"]["format"]: task for task in view["tasks"]}
    assert set(tasks) == {"json", "binary", "text"}
    assert tasks["json"]["id"] == first["id"]
    assert tasks["json"]["tag"] == "images"
    assert tasks["json"]["retryCount"] == 1
    assert tasks["json"]["leaseExpires"] > document["now"]
    assert json.loads(tasks["json"]["preview"]["text"]) == {"n": 1}
    assert tasks["binary"]["leaseExpires"] is None
    assert tasks["binary"]["retryCount"] == 0
    assert tasks["binary"]["tag"] is None
    assert tasks["binary"]["size"] == 8
    assert tasks["binary"]["preview"]["text"].startswith("00000000  ff 00 62 69 6e 61 72 79")
    assert tasks["text"]["preview"]["text"] == "plain text"


def test_json_nested_deeper_than_python_can_parse_is_previewed_as_text(server: RestServer):
    unclosed = b"[" * 50_000
    closed = b"[" * 50_000 + b"]" * 50_000
    insert(server, unclosed, APP, "pull-queue")
    insert(server, closed, APP, "pull-queue")

    answer = data(server)

    assert answer.status == 200, answer.body[:300]
    previews = [task["preview"] for task in queue_view(answer.json(), "pull-queue", APP)["tasks"]]
    assert [shown["format"] for shown in previews] == ["text", "text"]
    assert all(shown["text"] == "[" * PREVIEW_CHARS and shown["truncated"] for shown in previews)


def test_a_queue_deeper_than_the_tasks_shown_says_so(server: RestServer):
    for n in range(TASKS_SHOWN + 5):
        server.service.insert(APP, "pull-queue", {"payloadBase64": base64.b64encode(b"%d" % n).decode()})
    view = queue_view(as_json(data(server)), "pull-queue", APP)
    assert view["totalTasks"] == TASKS_SHOWN + 5
    assert len(view["tasks"]) == TASKS_SHOWN


def test_an_emulator_for_any_project_shows_the_projects_that_hold_tasks(make_emulator: MakeEmulator):
    emulator = make_emulator(queues=["pull-queue", "other"])
    [group] = as_json(data(emulator))["projects"]
    assert group["project"] is None
    assert [view["totalTasks"] for view in group["queues"]] == [0, 0]
    insert(emulator, b"1", "s~zeta-app", "pull-queue")
    insert(emulator, b"2", "alpha-app", "other")
    document = as_json(data(emulator))
    assert [group["project"] for group in document["projects"]] == ["alpha-app", "zeta-app"]
    assert queue_view(document, "other", "alpha-app")["totalTasks"] == 1
    assert queue_view(document, "pull-queue", "alpha-app")["totalTasks"] == 0
    assert queue_view(document, "pull-queue", "zeta-app")["totalTasks"] == 1


def test_polls_of_the_dashboard_are_not_counted_as_api_requests(make_emulator: MakeEmulator):
    emulator = make_emulator(queues=["pull-queue"])
    before = emulator.requests
    as_json(data(emulator))
    request(emulator, "GET", "/")
    assert emulator.requests == before


# -- the emulator's actions ------------------------------------------------------------


@pytest.fixture
def emulator_with_tasks(make_emulator: MakeEmulator) -> Emulator:
    """An emulator serving :data:`APP`: three tasks on ``pull-queue``, one leased; one on ``limited``."""
    emulator = make_emulator(queues=QUEUES, project=APP)
    for payload in (b"one", b"two", b"three"):
        insert(emulator, payload, APP, "pull-queue")
    lease(emulator, APP, "pull-queue", 1)
    insert(emulator, b"elsewhere", APP, "limited")
    return emulator


def test_deleting_a_task_deletes_that_task_only(emulator_with_tasks: Emulator):
    emulator = emulator_with_tasks
    names = task_ids(emulator, APP, "pull-queue")
    answer = act(
        emulator, "delete", {"project": APP, "queue": "pull-queue", "task": names[1]}, page_token(emulator)
    )
    assert as_json(answer) == {"deleted": names[1]}
    assert task_ids(emulator, APP, "pull-queue") == [names[0], names[2]]
    assert not exists(emulator, APP, "pull-queue", names[1])


def test_purging_a_queue_deletes_its_tasks_leased_ones_too_and_no_other_queues(emulator_with_tasks: Emulator):
    emulator = emulator_with_tasks
    answer = act(emulator, "purge", {"project": APP, "queue": "pull-queue"}, page_token(emulator))
    assert as_json(answer) == {"purged": 3}
    assert task_ids(emulator, APP, "pull-queue") == []
    assert len(task_ids(emulator, APP, "limited")) == 1


def test_deleting_a_task_that_is_gone_is_404(emulator_with_tasks: Emulator):
    token = page_token(emulator_with_tasks)
    answer = act(
        emulator_with_tasks, "delete", {"project": APP, "queue": "pull-queue", "task": "gone"}, token
    )
    assert_google_error(answer, 404, "gone")


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"queue": "pull-queue", "task": "t"}, ["'project'"]),
        ({"project": APP, "queue": "pull-queue"}, ["'task'"]),
        ({"project": APP, "queue": 7, "task": "t"}, ["'queue'"]),
        (["not", "an", "object"], ["JSON object"]),
    ],
)
def test_an_action_missing_what_it_needs_is_400_naming_it(emulator_with_tasks, document, words):
    before = task_ids(emulator_with_tasks, APP, "pull-queue")
    answer = act(emulator_with_tasks, "delete", document, page_token(emulator_with_tasks))
    assert_google_error(answer, 400, *words)
    assert task_ids(emulator_with_tasks, APP, "pull-queue") == before


# -- CSRF: what another site's page could send is refused, and changes nothing -----------


def _refused_and_nothing_changed(emulator: Emulator, answer, *words: str) -> None:
    assert_google_error(answer, 403, *words)
    assert len(task_ids(emulator, APP, "pull-queue")) == 3


def test_a_cross_origin_form_post_is_refused(emulator_with_tasks: Emulator):
    for path in (DELETE_PATH, PURGE_PATH):
        answer = request(
            emulator_with_tasks,
            "POST",
            path,
            b"project=test-app&queue=pull-queue",
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
        )
        _refused_and_nothing_changed(emulator_with_tasks, answer, "evil.example")


def test_a_form_post_without_an_origin_is_refused_for_want_of_the_token(emulator_with_tasks: Emulator):
    answer = request(
        emulator_with_tasks,
        "POST",
        PURGE_PATH,
        b"project=test-app&queue=pull-queue",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused_and_nothing_changed(emulator_with_tasks, answer, "x-dashboard-token")


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_an_action_without_the_pages_token_is_refused(emulator_with_tasks: Emulator, token: str | None):
    answer = act(emulator_with_tasks, "purge", {"project": APP, "queue": "pull-queue"}, token)
    _refused_and_nothing_changed(emulator_with_tasks, answer, "x-dashboard-token")


def test_an_action_from_another_site_is_refused_even_with_the_token(emulator_with_tasks: Emulator):
    token = page_token(emulator_with_tasks)
    document = {"project": APP, "queue": "pull-queue"}
    for site in ("cross-site", "same-site", "none"):
        answer = act(emulator_with_tasks, "purge", document, token, {"Sec-Fetch-Site": site})
        _refused_and_nothing_changed(emulator_with_tasks, answer, site)
    answer = act(emulator_with_tasks, "purge", document, token, {"Origin": "http://evil.example"})
    _refused_and_nothing_changed(emulator_with_tasks, answer, "evil.example")


def test_each_emulator_has_its_own_token(make_emulator: MakeEmulator, emulator_with_tasks: Emulator):
    other = make_emulator(queues=["pull-queue"])
    answer = act(emulator_with_tasks, "purge", {"project": APP, "queue": "pull-queue"}, page_token(other))
    _refused_and_nothing_changed(emulator_with_tasks, answer, "x-dashboard-token")


def test_actions_are_held_to_the_queues_acl(make_emulator: MakeEmulator):
    tokens = {
        "app-token": "app@example.com",
        "worker-token": "worker@example.com",
        "stranger-token": "stranger@example.com",
    }
    emulator = make_emulator(queues=QUEUES, project=APP, identities=tokens)
    worker = {"Authorization": "Bearer worker-token"}
    name = insert(emulator, b"x", APP, "guarded", headers={"Authorization": "Bearer app-token"})["id"]
    csrf = page_token(emulator)
    document = {"project": APP, "queue": "guarded", "task": name}
    answer = act(emulator, "delete", document, csrf, {"Authorization": "Bearer stranger-token"})
    assert_google_error(answer, 403, "stranger@example.com", "guarded")
    assert as_json(act(emulator, "delete", document, csrf, worker)) == {"deleted": name}


# -- the gateway: read-only, and behind its tokens and ACLs ---------------------------


def test_the_gateway_refuses_every_action(make_emulator: MakeEmulator):
    with LocalGateway(QUEUES, project=APP) as gateway:
        name = insert(gateway, b"keep me", APP, "pull-queue")["id"]
        for action, document in (
            ("delete", {"project": APP, "queue": "pull-queue", "task": name}),
            ("purge", {"project": APP, "queue": "pull-queue"}),
        ):
            answer = act(gateway, action, document, page_token(gateway))
            assert_google_error(answer, 403, "read-only")
        assert task_ids(gateway, APP, "pull-queue") == [name]


def test_the_gateways_data_needs_a_valid_token(guarded_gateway: LocalGateway, oauth: OAuthServer):
    assert request(guarded_gateway, "GET", "/").status == 200
    assert_google_error(data(guarded_gateway), 401)
    assert_google_error(data(guarded_gateway, "ya29.not-a-token"), 401)
    document = as_json(data(guarded_gateway, oauth.access_token_for(ROBOT)))
    assert [view["name"] for view in document["projects"][0]["queues"]] == [
        "guarded",
        "limited",
        "pull-queue",
    ]
    assert document["hidden"] == 0


def test_the_gateway_shows_only_the_queues_the_callers_acl_allows(
    guarded_gateway: LocalGateway, oauth: OAuthServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    worker = oauth.access_token_for("worker@example.com")
    insert(
        guarded_gateway,
        b'{"secret": 1}',
        APP,
        "pull-queue",
        headers={"Authorization": f"Bearer {oauth.access_token_for(ROBOT)}"},
    )
    document = as_json(data(guarded_gateway, worker))
    assert [view["name"] for view in document["projects"][0]["queues"]] == ["guarded"]
    assert document["hidden"] == 2
    assert b"secret" not in data(guarded_gateway, worker).body
    assert all(worker not in record.getMessage() for record in caplog.records)
