"""``scripts/demo``'s flags: a value it cannot run with is one argparse error
line naming the flag, before the emulator starts."""

from __future__ import annotations

import pytest

from kombu_appengine.demo import main


@pytest.mark.parametrize(
    ("flag", "value", "takes"),
    [
        ("--tasks", "0", "a positive integer"),
        ("--tasks", "-5", "a positive integer"),
        ("--processes", "0", "a positive integer"),
        ("--num-tasks", "0", "an integer from 1 to 1000"),
        ("--num-tasks", "1001", "an integer from 1 to 1000"),
        ("--tasks", "many", "a positive integer"),
    ],
)
def test_a_bad_value_is_one_error_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, takes: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([f"{flag}={value}"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"demo: error: argument {flag}: {value!r} is not {takes}"
