"""A failing task's traceback travels as the log record's ``exc_info``, not pasted into its message.

What changed is the log record, which only a handler in the same process
sees: these tests call the worker's task handling in-process, on a task
leased from the emulator fixture through a real kombu connection, and look
at the records ``caplog`` collects.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from kombu_appengine.worker import Counters, WorkerSettings, _handle
from tests.support.transport import total_tasks


class ImageBroken(Exception):
    pass


def resize(payload: Any) -> None:
    raise ImageBroken(f"cannot resize {payload['image']}")


def handle_failing_task(channel: Any, caplog: pytest.LogCaptureFixture, **settings: Any) -> logging.LogRecord:
    """Lease the task, let :func:`resize` fail on it; the one record the worker logged."""
    message = channel.basic_get("jobs")
    assert message is not None
    caplog.set_level(logging.INFO, logger="kombu_appengine.worker")
    _handle(
        channel,
        message,
        resize,
        WorkerSettings(function="jobs:resize", queue="jobs", transport_options={}, **settings),
        None,
        Counters(multiprocessing.get_context()),
    )
    (record,) = [r for r in caplog.records if r.name == "kombu_appengine.worker"]
    task_id = message.delivery_info["task_id"]
    assert record.getMessage().startswith(f"task {task_id} failed on lease 1 (its retry_count); ")
    return record


def assert_traceback_apart(record: logging.LogRecord, caplog: pytest.LogCaptureFixture) -> None:
    assert record.exc_info is not None
    assert record.exc_info[0] is ImageBroken
    assert "\n" not in record.getMessage()
    assert "Traceback" not in record.getMessage()
    # The handler still prints the traceback, after the message.
    assert "ImageBroken: cannot resize cat.png" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


def test_a_retried_task_logs_its_traceback_as_exc_info(channel: Any, caplog: pytest.LogCaptureFixture):
    record = handle_failing_task(channel, caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("retrying in 1s")
    assert_traceback_apart(record, caplog)


def test_a_dropped_task_logs_its_traceback_as_exc_info(
    channel: Any, emulator: Emulator, caplog: pytest.LogCaptureFixture
):
    record = handle_failing_task(channel, caplog, max_retries=0)
    assert record.levelno == logging.ERROR
    assert record.getMessage().endswith("deleting it")
    assert_traceback_apart(record, caplog)
    channel.flush()  # the delete is sent in a batch
    assert total_tasks(emulator, "jobs") == 0


def test_a_dead_lettered_task_logs_its_traceback_as_exc_info(
    channel: Any, emulator: Emulator, caplog: pytest.LogCaptureFixture
):
    record = handle_failing_task(channel, caplog, max_retries=0, dead_letter_queue="dead")
    assert record.levelno == logging.ERROR
    assert record.getMessage().endswith("moving it to 'dead'")
    assert_traceback_apart(record, caplog)
    assert total_tasks(emulator, "dead") == 1
