"""``--log-format json``: one JSON object a line on stderr, from the worker
(all its processes) and the emulator, with a failing task's traceback as a
field of its line; and the formatter itself, on records a log pipeline could
choke on."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from kombu_appengine.cli_common import JsonFormatter
from kombu_appengine.emulator import Emulator
from tests.support.emulator_process import Spawn
from tests.support.helpers import ROOT, MakeEmulator, wait_for
from tests.support.transport import connect, total_tasks

#: What every line has.
REQUIRED = {"timestamp", "level", "logger", "message", "process", "process_name"}


def record(message: str = "%s tasks", *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord(
        "kombu_appengine.worker", logging.WARNING, __file__, 1, message, args or (3,), None
    )
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON, each checked for the fields every line has."""
    documents = [json.loads(line) for line in text.splitlines()]
    for document in documents:
        assert set(document) >= REQUIRED, document
    return documents


def test_a_record_is_one_line_with_its_fields():
    line = JsonFormatter().format(record("task %s failed\non two lines", "abc"))
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "task abc failed\non two lines"
    assert document["level"] == "WARNING"
    assert document["logger"] == "kombu_appengine.worker"
    assert document["process"] == os.getpid()
    assert document["timestamp"].endswith("+00:00")
    assert "exception" not in document
    assert "extra" not in document


def test_an_exception_is_a_field_with_its_traceback():
    try:
        raise ValueError("bad image")
    except ValueError:
        failed = record(exc_info=sys.exc_info())
    document = json.loads(JsonFormatter().format(failed))
    assert document["exception"] == "ValueError: bad image"
    assert document["traceback"].startswith("Traceback (most recent call last):\n")
    assert document["traceback"].endswith("ValueError: bad image")


def test_extras_json_cannot_hold_are_written_as_their_repr():
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    document = json.loads(JsonFormatter().format(record(task_id="t1", thing=Opaque(), raw=b"\xff")))
    assert document["extra"] == {"task_id": "t1", "thing": "<Opaque>", "raw": "b'\\xff'"}


@pytest.mark.slow
def test_the_worker_and_its_processes_log_json_with_the_traceback_as_a_field(
    make_emulator: MakeEmulator, tmp_path: pathlib.Path
):
    emulator: Emulator = make_emulator(queues=["jobs"])
    with connect(emulator) as conn:
        conn.SimpleQueue("jobs").put({"n": 7})
    records = tmp_path / "record.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kombu_appengine.worker",
            "tests.observability.jobs:always_fail",
            "--queue",
            "jobs",
            "--processes",
            "2",
            "--max-retries",
            "0",
            "--polling-interval",
            "0.05",
            "--stats-interval",
            "0.2",
            "--log-format",
            "json",
        ],
        env=dict(
            os.environ,
            TASKQUEUE_EMULATOR_HOST=emulator.host,
            WORKER_RECORD=str(records),
            PYTHONPATH=str(ROOT),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: total_tasks(emulator, "jobs") == 0, timeout=60, what="the task to be dropped")
        process.terminate()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, err
    assert out.startswith("summary: processed=0 failed=1 ")
    lines = json_lines(err)
    (failure,) = [line for line in lines if "traceback" in line]
    assert failure["level"] == "ERROR"
    assert failure["message"].endswith(
        "failed on lease 1 (its retry_count); --max-retries 0 allows no more: deleting it"
    )
    assert failure["exception"] == "RuntimeError: task 7 cannot be done"
    assert failure["traceback"].endswith("RuntimeError: task 7 cannot be done")
    assert failure["process_name"].startswith("worker-")
    supervisor = {line["process"] for line in lines if line["process_name"] == "MainProcess"}
    assert failure["process"] not in supervisor
    assert any(line["message"].startswith("processed=0 failed=1 ") for line in lines)


@pytest.mark.slow
def test_a_worker_that_cannot_start_says_why_in_one_json_line(make_emulator: MakeEmulator):
    emulator = make_emulator(queues=["jobs"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kombu_appengine.worker",
            "no_such_module:f",
            "--queue",
            "jobs",
            "--log-format",
            "json",
        ],
        env=dict(os.environ, TASKQUEUE_EMULATOR_HOST=emulator.host),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = json_lines(result.stderr)
    assert line["level"] == "CRITICAL"
    assert line["message"].startswith("cannot import module 'no_such_module'")


@pytest.mark.slow
def test_the_emulator_logs_json(spawn: Spawn, tmp_path: pathlib.Path):
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text("queue:\n- name: jobs\n  mode: pull\n- name: mail\n  rate: 1/s\n")
    emulator = spawn("--queue-yaml", str(queue_yaml), "--log-format", "json", "--log-level", "DEBUG")
    assert emulator.insert("t1", queue="jobs")[0] == 200
    assert emulator.get("t2", queue="jobs")[0] == 404

    def requests_logged() -> list[dict[str, Any]]:
        lines = emulator.stderr().splitlines()
        # Only whole lines: the last may be on its way.
        return [json.loads(line) for line in lines if line.endswith("}")]

    wait_for(lambda: sum("/tasks/t2 404" in line["message"] for line in requests_logged()), what="the 404")
    emulator.kill()
    lines = json_lines(emulator.stderr())
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["message"] == (
        "note: not serving push queues mail (only queues with 'mode: pull' are served by the REST API)"
    )
    assert any(line["level"] == "DEBUG" and line["message"].endswith("/tasks 200") for line in lines)


@pytest.mark.slow
def test_the_local_gateway_logs_json(tmp_path: pathlib.Path):
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text("queue:\n- name: jobs\n  mode: pull\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kombu_appengine.gateway.cli",
            "serve",
            "--queue-yaml",
            str(queue_yaml),
            "--port",
            "0",
            "--log-format",
            "json",
            "--log-level",
            "DEBUG",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/taskqueue/v1beta2/projects/p/taskqueues/nope", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    lines = json_lines(err)
    assert any(line["message"].endswith("/taskqueues/nope 404") for line in lines), lines
