"""``pullqueue_status`` against real servers: its counts, its ``--json``
schema, a truncated task list, missing queues, and ``--watch``.

The command runs in this process (``status.main``, its output through
``capsys``) against servers on loopback, except ``--watch``, which runs as
the installed console script and is stopped with SIGINT as a person would.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kombu_appengine import status
from kombu_appengine.api import MAX_LIST_TASKS
from kombu_appengine.client import TaskQueueClient
from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import FakeClock, MakeServer, wait_for
from tests.support.servers import SERVER_KINDS, start_server
from tests.support.transport import EMULATOR_HOST_ENV, PROJECT, connect

#: A whole second, as App Engine keeps enqueue times, for servers on a fake clock.
START = 1_700_000_000

#: The fields of a queue's object in the --json document, as README documents them.
QUEUE_FIELDS = {
    "queue",
    "total_tasks",
    "longest_wait_seconds",
    "oldest_enqueued_age_seconds",
    "leased_last_minute",
    "leased_last_hour",
    "listed_tasks",
    "truncated",
    "leased_now",
    "tags",
}


@pytest.fixture(params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[RestServer]:
    """The emulator, then the gateway on App Engine's stub, with a queue of its own and a shared one."""
    with start_server(request.param, queues=["jobs", "shared", "idle"]) as started:
        yield started


def run_status(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """``pullqueue_status --api-endpoint URL ARGS`` in this process: exit status, stdout, stderr."""
    try:
        status.main(["--api-endpoint", url, *args])
        code = 0
    except SystemExit as stopped:
        code = 1 if isinstance(stopped.code, str) else int(stopped.code or 0)
        if isinstance(stopped.code, str):
            print(stopped.code, file=sys.stderr)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_counts_every_field_of_the_schema(server: RestServer, capsys: pytest.CaptureFixture[str]):
    client = TaskQueueClient(PROJECT, server.url + "/")
    for number in range(5):
        client.insert("jobs", b"%d" % number)
    for number in range(3):
        client.insert("shared", b"%d" % number, tag="replies")
    client.insert("shared", b"0", tag="other")
    assert len(client.lease("jobs", 2, 600)) == 2
    assert len(client.lease("shared", 1, 600, tag="replies")) == 1

    code, out, err = run_status(
        capsys, server.url, "--queue", "jobs", "--queue", "shared", "--queue", "idle", "--json"
    )

    assert code == 0, err
    (line,) = out.splitlines()
    document = json.loads(line)
    assert set(document) == {"schema", "time", "project", "queues", "missing"}
    assert document["schema"] == "pullqueue_status/2"
    assert document["project"] == PROJECT
    assert document["missing"] == []
    assert document["time"].endswith("Z")
    jobs_status, shared_status, idle_status = document["queues"]
    for queue in document["queues"]:
        assert set(queue) == QUEUE_FIELDS
    assert jobs_status["queue"] == "jobs"
    assert jobs_status["total_tasks"] == 5
    assert jobs_status["listed_tasks"] == 5
    assert jobs_status["truncated"] is False
    assert jobs_status["leased_now"] == 2
    assert jobs_status["leased_last_minute"] == jobs_status["leased_last_hour"] == 2
    assert shared_status["leased_last_minute"] == shared_status["leased_last_hour"] == 1
    assert jobs_status["tags"] == {}
    for figure in ("longest_wait_seconds", "oldest_enqueued_age_seconds"):
        assert isinstance(jobs_status[figure], float)
        assert jobs_status[figure] >= 0
    assert shared_status["total_tasks"] == 4
    assert shared_status["leased_now"] == 1
    assert shared_status["tags"] == {
        "other": {"tasks": 1, "leased_now": 0},
        "replies": {"tasks": 3, "leased_now": 1},
    }
    assert idle_status == {
        "queue": "idle",
        "total_tasks": 0,
        "longest_wait_seconds": None,
        "oldest_enqueued_age_seconds": None,
        "leased_last_minute": 0,
        "leased_last_hour": 0,
        "listed_tasks": 0,
        "truncated": False,
        "leased_now": 0,
        "tags": {},
    }


def test_text_shows_a_line_per_queue_and_per_tag(emulator: Emulator, capsys: pytest.CaptureFixture[str]):
    with connect(emulator, shared_queue="other") as conn:
        conn.SimpleQueue("default").put({"n": 1})
        conn.SimpleQueue("celery.reply").put({"n": 1})

    code, out, err = run_status(capsys, emulator.url, "--queue", "default", "--queue", "other")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"project {PROJECT} at ")
    assert lines[1].split() == [
        *("QUEUE", "TASKS", "LEASED", "NOW", "LONGEST", "WAIT", "OLDEST", "LEASED", "1M", "LEASED", "1H")
    ]
    assert lines[2].split()[:3] == ["default", "1", "0"]
    assert lines[3].split()[:3] == ["other", "1", "0"]
    assert lines[4].split() == ["tag", "celery.reply", "1", "0"]
    assert len(lines) == 5
    assert "≥" not in out


def test_text_escapes_what_would_forge_a_row_or_reach_the_terminal(
    server: RestServer, capsys: pytest.CaptureFixture[str]
):
    client = TaskQueueClient(PROJECT, server.url + "/")
    forged = "x\nq-other            12345           0     9d        999        999"
    for tag in (forged, "\x1b[2J\x1b[31mred", "back\\slash", "caf\u00e9"):
        client.insert("shared", b"x", tag=tag)

    code, out, err = run_status(capsys, server.url, "--queue", "shared")

    assert code == 0, err
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 3 + 4
    assert not any(line.startswith("q-other") for line in lines)
    assert sorted(line.split()[1] for line in lines[3:]) == sorted(
        ["x\\nq-other", "\\x1b[2J\\x1b[31mred", "back\\\\slash", "caf\u00e9"]
    )


def test_counts_from_a_truncated_list_say_so(emulator: Emulator, capsys: pytest.CaptureFixture[str]):
    with connect(emulator) as conn:
        queue = conn.SimpleQueue("default")
        for number in range(MAX_LIST_TASKS + 5):
            queue.put({"n": number})

    code, out, _ = run_status(capsys, emulator.url, "--queue", "default", "--json")
    (queue_status,) = json.loads(out)["queues"]
    assert code == 0
    assert queue_status["total_tasks"] == MAX_LIST_TASKS + 5
    assert queue_status["listed_tasks"] == MAX_LIST_TASKS
    assert queue_status["truncated"] is True

    code, out, _ = run_status(capsys, emulator.url, "--queue", "default")
    assert code == 0
    row = out.splitlines()[2].split()
    assert row[:3] == ["default", str(MAX_LIST_TASKS + 5), "≥0"]
    assert row[4].startswith("≥")  # the oldest of the first 100: the queue may hold older
    assert out.splitlines()[-1] == (
        f"≥: at least, from the first {MAX_LIST_TASKS} tasks the API lists; the queue holds more"
    )


def test_the_longest_wait_follows_the_api_and_the_oldest_task_its_enqueue_time(make_server: MakeServer):
    """The stats' oldestTask is the earliest ETA, which a lease or a release moves; the enqueue time stays."""
    clock = FakeClock(START)
    server = make_server(queues=["jobs"], clock=clock)
    client = TaskQueueClient(PROJECT, server.url + "/")
    first = client.insert("jobs", b"first")
    clock.advance(30)
    client.insert("jobs", b"second")
    clock.advance(30)
    [leased] = client.lease("jobs", 1, 600)
    assert leased["id"] == first

    clock.advance(10)
    shown = status.queue_status(client, "jobs", clock())
    # The second task has waited 40 s; the first, leased, is 70 s old.
    assert shown.longest_wait_seconds == 40
    assert shown.oldest_enqueued_age_seconds == 70

    client.change_lease("jobs", first, 0)  # handed back: available again from now
    client.lease("jobs", 1, 600)  # the second task
    clock.advance(5)
    shown = status.queue_status(client, "jobs", clock())
    assert shown.longest_wait_seconds == 5
    assert shown.oldest_enqueued_age_seconds == 75

    client.lease("jobs", 1, 600)
    shown = status.queue_status(client, "jobs", clock())
    assert shown.longest_wait_seconds == 0  # nothing is waiting: both are leased
    assert shown.oldest_enqueued_age_seconds == 75


def test_a_queue_of_exactly_the_lists_limit_is_not_truncated(
    server: RestServer, capsys: pytest.CaptureFixture[str]
):
    client = TaskQueueClient(PROJECT, server.url + "/")
    for number in range(MAX_LIST_TASKS):
        client.insert("shared", b"%d" % number, tag="replies")

    code, out, _ = run_status(capsys, server.url, "--queue", "shared", "--json")
    (queue_status,) = json.loads(out)["queues"]
    assert code == 0
    assert queue_status["total_tasks"] == queue_status["listed_tasks"] == MAX_LIST_TASKS
    assert queue_status["truncated"] is False

    code, out, _ = run_status(capsys, server.url, "--queue", "shared")
    assert code == 0
    assert "≥" not in out
    assert out.splitlines()[3].split() == ["tag", "replies", str(MAX_LIST_TASKS), "0"]


def test_a_missing_queue_is_named_with_the_project_and_exits_1(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
):
    code, out, err = run_status(
        capsys, emulator.url, "--queue", "default", "--queue", "nope", "--project", "my-app", "--json"
    )

    assert code == 1
    document = json.loads(out)
    assert [queue["queue"] for queue in document["queues"]] == ["default"]
    assert document["missing"] == ["nope"]
    assert err.strip() == (
        "pullqueue_status: queue 'nope' does not exist in project 'my-app', or is not a pull queue"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "127.0.0.1:8123/taskqueue"]
)
def test_a_bad_api_endpoint_is_one_error_line_naming_the_flag(capsys: pytest.CaptureFixture[str], url: str):
    code, out, err = run_status(capsys, url, "--queue", "jobs")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith(f"pullqueue_status: error: argument --api-endpoint: {url!r} ")


def test_a_bad_emulator_host_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv(EMULATOR_HOST_ENV, "127.0.0.1:99999")
    with pytest.raises(SystemExit) as stopped:
        status.main(["--queue", "jobs"])
    assert stopped.value.code == (
        f"pullqueue_status: environment variable {EMULATOR_HOST_ENV}: '127.0.0.1:99999' "
        "has a port that is not a number from 1 to 65535"
    )


def test_without_queues_it_says_how_to_name_them(emulator: Emulator, capsys: pytest.CaptureFixture[str]):
    code, out, err = run_status(capsys, emulator.url)
    assert code == 2
    assert out == ""
    assert err.splitlines()[-1] == (
        "pullqueue_status: error: name the queues to show with --queue NAME (repeatable) or "
        "--queue-yaml PATH: the API cannot list a project's queues"
    )


def test_queue_yaml_names_its_pull_queues_and_kombu_names_are_translated(
    make_emulator: Any, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
):
    server = make_emulator(queues=["images", "videos", "my-app-tasks"])
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text(
        "queue:\n- name: images\n  mode: pull\n- name: mail\n  rate: 1/s\n- name: videos\n  mode: pull\n"
    )

    code, out, err = run_status(
        capsys, server.url, "--queue-yaml", str(queue_yaml), "--queue", "my_app.tasks", "--json"
    )

    assert code == 0, err
    assert [queue["queue"] for queue in json.loads(out)["queues"]] == ["images", "videos", "my-app-tasks"]


def test_a_queue_yaml_that_cannot_be_read_is_named(emulator: Emulator, tmp_path: pathlib.Path, capsys):
    missing = tmp_path / "queue.yaml"
    code, out, err = run_status(capsys, emulator.url, "--queue-yaml", str(missing))
    assert code == 1
    assert out == ""
    assert str(missing) in err


@pytest.mark.parametrize("value", ["0", "0.05", "1e-300", "86401", "1e10", "inf", "nan", "-1", "soon"])
def test_a_watch_interval_out_of_its_range_is_one_error_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], value: str
):
    with pytest.raises(SystemExit) as exited:
        status.main(["--queue", "default", f"--watch={value}"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        f"pullqueue_status: error: argument --watch: {value!r} is not a number of seconds from 0.1 to 86400"
    )


@pytest.mark.parametrize("value", ["0.1", "10", "86400"])
def test_a_watch_interval_in_its_range_is_taken(value: str):
    assert status._parser().parse_args(["--watch", value]).watch == float(value)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.4, "0s"),
        (59.9, "59s"),
        (61, "1m01s"),
        (3600 * 2 + 300, "2h05m"),
        (86400 * 3 + 7200, "3d02h"),
    ],
)
def test_ages_are_shown_in_the_largest_units_that_fit(seconds: float | None, shown: str):
    assert status.format_age(seconds) == shown


@pytest.mark.slow
def test_watch_refreshes_until_sigint_then_exits_0(emulator: Emulator):
    process = subprocess.Popen(
        [
            str(pathlib.Path(sys.executable).parent / "pullqueue_status"),
            "--queue",
            "default",
            "--json",
            "--watch",
            "0.1",
        ],
        # The emulator named as for the worker and kombu: no flag needed.
        env=dict(os.environ, TASKQUEUE_EMULATOR_HOST=emulator.host),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    documents: list[dict[str, Any]] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            documents.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: documents, timeout=30, what="the first refresh")
        assert documents[0]["queues"][0]["total_tasks"] == 0
        with connect(emulator) as conn:
            conn.SimpleQueue("default").put({"n": 1})
        # Only a later refresh can see the task put after the first.
        wait_for(
            lambda: documents[-1]["queues"][0]["total_tasks"] == 1,
            timeout=30,
            what="a refresh seeing the task",
        )
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert process.stderr is not None
    assert process.stderr.read() == ""
    assert len(documents) >= 2


def start_watch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The installed ``pullqueue_status --watch 0.1 ARGS``, its output on pipes."""
    return subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "pullqueue_status"), "--watch", "0.1", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens (held, so nothing can while the test runs)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.mark.slow
def test_watch_ends_quietly_when_its_reader_goes_away(emulator: Emulator):
    process = start_watch(
        "--queue", "default", "--json", env=dict(os.environ, TASKQUEUE_EMULATOR_HOST=emulator.host)
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        assert json.loads(process.stdout.readline())["queues"][0]["queue"] == "default"
        process.stdout.close()  # as `| head -1` does
        assert process.wait(timeout=30) == 128 + signal.SIGPIPE
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_watch_says_once_a_refresh_that_the_service_cannot_be_reached(closed_port: int):
    endpoint = f"http://127.0.0.1:{closed_port}"
    process = start_watch("--api-endpoint", endpoint, "--project", "my-app", "--queue", "default")
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(3)]
        # One line a refresh, none a retry: the next refresh is the retry.
        assert all(
            line.startswith(f"pullqueue_status: cannot reach the Task Queue API at {endpoint}")
            for line in lines
        ), lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigterm_ends_a_watch_at_once_even_during_a_call_that_gets_no_answer():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = start_watch("--api-endpoint", endpoint, "--project", "my-app", "--queue", "default")
        try:
            connection, _ = silent.accept()  # the refresh is waiting for its answer now
            with connection:
                process.send_signal(signal.SIGTERM)
                # Well before the client's 60 s timeout would end the call.
                assert process.wait(timeout=20) == 0
            assert process.stderr is not None
            assert process.stderr.read() == ""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
