"""``pullqueue_emulator``'s options are checked before anything starts: one
argparse error line naming the option and what it takes."""

from __future__ import annotations

import pytest

from kombu_appengine.emulator import cli


@pytest.mark.parametrize(
    ("option", "value", "takes"),
    [
        ("--max-connections", "0", "a positive integer"),
        ("--max-connections", "-3", "a positive integer"),
        ("--max-connections", "2.5", "a positive integer"),
        ("--max-connections", "many", "a positive integer"),
        ("--request-timeout", "0", "a positive number of seconds"),
        ("--request-timeout", "inf", "a positive number of seconds"),
        ("--idle-timeout", "-1", "a positive number of seconds"),
        ("--idle-timeout", "nan", "a positive number of seconds"),
        ("--latency", "-5", "zero or a positive number of milliseconds"),
        ("--latency", "inf", "zero or a positive number of milliseconds"),
        ("--latency", "soon", "zero or a positive number of milliseconds"),
    ],
)
def test_a_bad_value_is_one_error_line(
    capsys: pytest.CaptureFixture[str], option: str, value: str, takes: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([option, value])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    # argparse's usage, then the one error line.
    assert err.splitlines()[-1] == f"pullqueue_emulator: error: argument {option}: {value!r} is not {takes}"


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("250", 0.25), ("1.5", 0.0015), ("60000", 60.0)])
def test_latency_is_given_in_milliseconds(value: str, seconds: float) -> None:
    assert cli.milliseconds(value) == seconds


def test_the_defaults_are_the_emulators() -> None:
    from kombu_appengine.emulator import server

    parsed = cli._parser().parse_args([])
    assert parsed.max_connections == server.DEFAULT_MAX_CONNECTIONS
    assert parsed.request_timeout == server.REQUEST_TIMEOUT
    assert parsed.idle_timeout == server.IDLE_TIMEOUT
    assert parsed.latency == 0
