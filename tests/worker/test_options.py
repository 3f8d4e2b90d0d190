"""``pullqueue_worker``'s flags are checked by argparse before anything starts:
a value that would crash the processes, spin them, or lose tasks is one error
line naming the flag."""

from __future__ import annotations

import pytest

from kombu_appengine.worker import _parser, main

#: What every command line below starts with.
BASE = ["jobs:handle", "--queue", "jobs"]


def error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*BASE, *args])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    # argparse's usage, then the one error line.
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("flag", "value", "takes"),
    [
        ("--retry-backoff", "nan", "zero or a positive number of seconds"),
        ("--retry-backoff", "inf", "zero or a positive number of seconds"),
        ("--retry-backoff", "-1", "zero or a positive number of seconds"),
        ("--max-retries", "-1", "zero or a positive integer"),
        ("--max-retries", "1.5", "zero or a positive integer"),
        ("--stats-interval", "0", "a positive number of seconds"),
        ("--stats-interval", "nan", "a positive number of seconds"),
        ("--stats-interval", "-inf", "a positive number of seconds"),
        ("--polling-interval", "inf", "a number of seconds from 0 to 3600"),
        ("--polling-interval", "-1", "a number of seconds from 0 to 3600"),
        ("--polling-interval", "nan", "a number of seconds from 0 to 3600"),
        ("--lease-secs", "inf", "an integer from 1 to 604800"),
        ("--lease-secs", "-5", "an integer from 1 to 604800"),
        ("--lease-secs", "0", "an integer from 1 to 604800"),
        ("--lease-secs", "604801", "an integer from 1 to 604800"),
        ("--num-tasks", "0", "an integer from 1 to 1000"),
        ("--num-tasks", "-inf", "an integer from 1 to 1000"),
        ("--num-tasks", "1001", "an integer from 1 to 1000"),
        ("--processes", "0", "a positive integer"),
        ("--processes", "-2", "a positive integer"),
        ("--processes", "inf", "a positive integer"),
    ],
)
def test_a_bad_number_is_one_error_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, takes: str
) -> None:
    # "--flag=VALUE", so that argparse takes "-inf" as a value, not an option.
    assert error_line(capsys, f"{flag}={value}") == (
        f"pullqueue_worker: error: argument {flag}: {value!r} is not {takes}"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://h:1/path", "ftp://h:1"]
)
def test_a_bad_api_endpoint_is_one_error_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    # Port 99999 was an OverflowError, port abc a connection error retried for ever.
    line = error_line(capsys, f"--api-endpoint={url}")
    assert line.startswith(f"pullqueue_worker: error: argument --api-endpoint: {url!r} ")


@pytest.mark.parametrize("flag", ["--queue", "--dead-letter-queue"])
def test_an_empty_queue_name_is_one_error_line(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert error_line(capsys, flag, "") == (
        f"pullqueue_worker: error: argument {flag}: a queue name must not be empty"
    )


@pytest.mark.parametrize(("queue", "dead_letter_queue"), [("jobs", "jobs"), ("a.b", "a_b")])
def test_a_dead_letter_queue_that_is_the_queue_itself_is_refused(
    capsys: pytest.CaptureFixture[str], queue: str, dead_letter_queue: str
) -> None:
    line = error_line(capsys, "--queue", queue, "--dead-letter-queue", dead_letter_queue)
    assert line.startswith("pullqueue_worker: error: --dead-letter-queue ")
    assert repr(dead_letter_queue) in line
    assert repr(queue) in line


def test_the_edges_of_every_range_are_taken() -> None:
    args = _parser().parse_args(
        [
            *BASE,
            "--retry-backoff",
            "0",
            "--max-retries",
            "0",
            "--polling-interval",
            "0",
            "--stats-interval",
            "0.5",
            "--lease-secs",
            "604800",
            "--num-tasks",
            "1000",
            "--processes",
            "1",
            "--dead-letter-queue",
            "dead",
        ]
    )
    assert (args.retry_backoff, args.max_retries, args.polling_interval, args.stats_interval) == (
        0,
        0,
        0,
        0.5,
    )
    assert (args.lease_secs, args.num_tasks, args.processes) == (604800, 1000, 1)
