"""The worker's plain functions: retry backoff, loading MODULE:FUNCTION, the summary line."""

import json

import pytest

from kombu_appengine.worker import (
    MAX_BACKOFF_SECONDS,
    WorkerError,
    backoff_seconds,
    format_summary,
    load_function,
)


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


@pytest.mark.parametrize("first", [1.0, 5e-324, 1e-300, 0.5, 3599.0, 3600.0, 1e308])
@pytest.mark.parametrize("attempt", [1, 2, 12, 1025, 2000, 10**6])
def test_backoff_is_a_whole_number_of_seconds_up_to_the_cap_for_any_accepted_value(first, attempt):
    delay = backoff_seconds(attempt, first)
    assert isinstance(delay, int)
    assert 1 <= delay <= MAX_BACKOFF_SECONDS
    assert delay >= backoff_seconds(max(attempt - 1, 1), first)


def test_backoff_of_an_unusable_first_delay_is_no_delay():
    # argparse refuses these; a WorkerSettings built in Python may still hold them.
    assert backoff_seconds(3, float("nan")) == 0
    assert backoff_seconds(3, -1.0) == 0
    assert backoff_seconds(3, float("inf")) == MAX_BACKOFF_SECONDS
