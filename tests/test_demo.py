"""``scripts/demo``'s flags: a value it cannot run with is one argparse error
line naming the flag, before the emulator starts; ``--keep`` leaves the
emulator and its dashboard up after the summary, until Ctrl-C."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.request

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


@pytest.mark.slow
def test_keep_leaves_the_emulator_and_its_dashboard_up_until_ctrl_c():
    demo = subprocess.Popen(
        [sys.executable, "-m", "kombu_appengine.demo", "--tasks", "20", "--processes", "1", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()
        output = []
        while not output or not output[-1].startswith("the emulator and its dashboard stay up at "):
            output.append(lines.get(timeout=300))
        assert "OK: every task processed once, queue empty\n" in output
        url = output[-1].split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url) as page:
            assert page.status == 200
            assert page.read().startswith(b"<!DOCTYPE html>")
        with urllib.request.urlopen(url + "dashboard/api/queues") as answer:
            document = json.load(answer)
        [group] = document["projects"]
        assert group["project"] == "demo-app"
        assert [(view["name"], view["totalTasks"]) for view in group["queues"]] == [("demo", 0)]
        assert demo.poll() is None
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
        assert f"dashboard: {url} " in demo.stderr.read()
    finally:
        demo.kill()
        demo.wait()
