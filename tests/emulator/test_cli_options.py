"""``pullqueue_emulator``'s options are checked before anything starts: one
argparse error line naming the option and what it takes."""

from __future__ import annotations

import pathlib

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


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--port", "-1", "'-1' is not an integer from 0 to 65535"),
        ("--port", "65536", "'65536' is not an integer from 0 to 65535"),
        ("--port", "http", "'http' is not an integer from 0 to 65535"),
        ("--project", "s~", "'s~' is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"),
        ("--project", "", "'' is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"),
        ("--project", "my app", "'my app' is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"),
        ("--project", "a/b", "'a/b' is not an application id: 1 to 100 of a-z, 0-9, '-', '.' and ':'"),
        ("--data-dir", "", "a path must not be empty"),
        ("--host", "", "an address must not be empty (0.0.0.0 listens on every address)"),
    ],
)
def test_a_value_the_emulator_cannot_serve_with_is_one_error_line(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    # The parser alone: were the value taken, main() would go on to serve.
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_args([f"{option}={value}"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"pullqueue_emulator: error: argument {option}: {message}"


@pytest.mark.parametrize("project", ["my-app", "s~my-app", "e~my-app", "example.com:my-app", "demo"])
def test_application_ids_are_taken_with_or_without_their_prefix(project: str) -> None:
    assert cli._parser().parse_args(["--project", project]).project == project


@pytest.mark.parametrize("kind", ["file", "/dev/null"])
def test_a_data_dir_that_is_not_a_directory_is_one_line_without_a_permission_warning(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path, kind: str
) -> None:
    path = tmp_path / "a-file" if kind == "file" else pathlib.Path(kind)
    if kind == "file":
        path.write_text("not a directory")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--port", "0", "--queue", "default", "--data-dir", str(path)])
    assert exited.value.code == f"pullqueue_emulator: cannot start: data dir {path} is not a directory"
    assert "chmod" not in caplog.text + capsys.readouterr().err
