"""The worker's plain functions: retry backoff, loading MODULE:FUNCTION, the summary line."""

import json

import pytest

from kombu_appengine.worker import WorkerError, backoff_seconds, format_summary, load_function


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n, 1.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_seconds(40, 1.0) == 3600
    assert backoff_seconds(5, 0) == 0


def test_load_function_rejects_bad_specs():
    with pytest.raises(WorkerError, match="not MODULE:FUNCTION"):
        load_function("json.loads")
    assert load_function("json:loads") is json.loads


def test_summary_line_format():
    counts = {"processed": 10, "failed": 1, "retried": 1, "dead_lettered": 0, "dropped": 0, "seconds": 2.0}
    assert format_summary(counts) == (
        "summary: processed=10 failed=1 retried=1 dead_lettered=0 dropped=0 seconds=2.0 tasks_per_second=5.0"
    )
