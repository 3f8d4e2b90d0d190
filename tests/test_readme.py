"""Every example and command in README.md runs, so the manual cannot rot.

Python blocks run in order, each in a fresh interpreter, against one
emulator; the address the README gives (``127.0.0.1:8123``) is replaced by
that emulator's. Shell commands are checked against the commands' own
``--help``: every flag the README uses must exist.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.support.helpers import CELERY_EXAMPLE, ROOT
from tests.support.transport import total_tasks

README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The emulator address the README's examples use.
README_HOST = "127.0.0.1:8123"
#: The deployed gateway the README's examples name: the test server stands in for it.
README_GATEWAY = "https://pullqueue-gateway-dot-my-app.appspot.com"
#: The queues the README's examples use.
README_QUEUES = ["pull-queue", "other", "images", "celery", "shared"]
#: Commands of this project whose flags the README may use.
COMMANDS = {
    "pullqueue_emulator": [sys.executable, "-m", "kombu_appengine.emulator"],
    "pullqueue_worker": [sys.executable, "-m", "kombu_appengine.worker"],
    "pullqueue_authenticate": [sys.executable, "-m", "kombu_appengine.authenticate"],
    "pullqueue_gateway": [sys.executable, "-m", "kombu_appengine.gateway.cli"],
    "pullqueue_status": [sys.executable, "-m", "kombu_appengine.status"],
}


def blocks(language):
    """The README's code blocks in ``language``, with the heading they stand under."""
    found = []
    heading = ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", README, re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).lstrip("# ")
        elif match.group(2) == language:
            found.append((heading, match.group(3)))
    return found


PYTHON_BLOCKS = [
    (heading, code)
    for heading, code in blocks("python")
    if "def test_" not in code and "credentials_file" not in code
]
FIXTURE_BLOCKS = [code for _, code in blocks("python") if "def test_" in code]
#: Examples for the real service: run against an emulator that demands the
#: tokens a local OAuth server issued.
CREDENTIAL_BLOCKS = [code for _, code in blocks("python") if "credentials_file" in code]


def test_the_readme_has_examples_to_run():
    assert len(PYTHON_BLOCKS) >= 5
    assert FIXTURE_BLOCKS


def run_python(code, host, cwd, timeout=120, env=None):
    env = env or dict(os.environ, TASKQUEUE_EMULATOR_HOST=host)
    return subprocess.run(
        [sys.executable, "-c", code.replace(README_HOST, host).replace(README_GATEWAY, f"http://{host}")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def module_name(code):
    """The module a block is, by its opening docstring (``tasks.py: ...``), else None."""
    match = re.match(r'"""(\w+)\.py:', code)
    return match.group(1) if match else None


@pytest.mark.slow
def test_python_examples_run_in_order(make_emulator, tmp_path):
    readme_emulator = make_emulator(queues=README_QUEUES)
    # Modules the README names (tasks.py) are there for the blocks that import them.
    for _, code in PYTHON_BLOCKS:
        if module_name(code):
            (tmp_path / f"{module_name(code)}.py").write_text(code)
    for heading, code in PYTHON_BLOCKS:
        result = run_python(code, readme_emulator.host, tmp_path)
        assert result.returncode == 0, f"the example under {heading!r} failed:\n{code}\n{result.stderr}"
    # The producer's ten messages were all consumed by the consumer example.
    assert total_tasks(readme_emulator, "pull-queue") == 0


@pytest.mark.slow
def test_consumer_example_prints_what_the_producer_sent(make_emulator, tmp_path):
    readme_emulator = make_emulator(queues=README_QUEUES)
    by_heading = dict(PYTHON_BLOCKS)
    assert run_python(by_heading["A simple producer"], readme_emulator.host, tmp_path).returncode == 0
    result = run_python(by_heading["A simple consumer"], readme_emulator.host, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:10] == [f"hello {n}" for n in range(10)]


@pytest.mark.slow
def test_real_service_example_signs_with_the_stored_token(make_emulator, oauth, tmp_path):
    assert CREDENTIAL_BLOCKS
    server = make_emulator(queues=README_QUEUES, require_auth=True)
    server.api.accepted_tokens = oauth.valid_tokens
    oauth.write_credentials_file(tmp_path / "credentials")
    env = dict(os.environ, TASKQUEUE_EMULATOR_HOST=server.host)
    for code in CREDENTIAL_BLOCKS:
        result = run_python(code, server.host, tmp_path, env=env)
        assert result.returncode == 0, f"{code}\n{result.stderr}"
    assert server.tokens
    assert set(server.tokens) <= set(oauth.issued)
    assert total_tasks(server, "pull-queue", project="my-app") == len(CREDENTIAL_BLOCKS)


@pytest.mark.slow
def test_fixture_example_passes_under_pytest(tmp_path):
    for number, code in enumerate(FIXTURE_BLOCKS):
        (tmp_path / f"test_readme_example_{number}.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(FIXTURE_BLOCKS)} passed" in result.stdout


def command_lines():
    for _, code in blocks("sh"):
        for line in code.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


@pytest.mark.slow
def test_shell_commands_exist_with_the_flags_used():
    seen = set()
    for line in command_lines():
        words = shlex.split(line)
        if words[0] == ".venv/bin/python":
            words = words[1:]
        if words[0].startswith("scripts/"):
            assert os.access(ROOT / words[0], os.X_OK), f"{words[0]} is not executable"
            seen.add(words[0])
            continue
        if words[:3] == ["python", "-m", "kombu_appengine.emulator"]:
            words = ["pullqueue_emulator", *words[3:]]
        if words[0] not in COMMANDS:
            continue
        seen.add(words[0])
        command = COMMANDS[words[0]]
        if words[0] == "pullqueue_gateway" and len(words) > 1 and not words[1].startswith("-"):
            command = [*command, words[1]]  # its subcommand's flags
        help_text = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60).stdout
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in help_text, f"{words[0]} has no {word} (README: {line})"
    assert {"scripts/demo", "scripts/test", "pullqueue_emulator", "pullqueue_worker"} <= seen


def test_the_celery_example_is_the_one_the_celery_tests_run():
    example = CELERY_EXAMPLE.read_text(encoding="utf-8")
    assert module_name(example) == "tasks"
    assert f"```python\n{example}```" in README


def test_readme_shows_the_two_commands_first():
    quick_start = README.index("## Quick start")
    assert README.index("scripts/demo") > quick_start
    assert README.index("scripts/test") > quick_start
    assert README.index("## Quick start") < README.index("## kombu on a pull queue")


def test_every_transport_option_in_the_manual_is_in_the_readme():
    from kombu_appengine import transport

    documented = set(re.findall(r"^\* ``(\w+)``", transport.__doc__, re.MULTILINE))
    in_readme = set(re.findall(r"^\| `(\w+)` \|", README, re.MULTILINE))
    assert documented
    assert documented <= in_readme


@pytest.mark.slow
def test_demo_runs_and_reports_an_empty_queue():
    result = subprocess.run(
        [sys.executable, "-m", "kombu_appengine.demo", "--tasks", "200", "--processes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "processed:          200 of 200" in result.stdout
    assert "queue now holds:    0 tasks (taskqueues.get), 0 listed (tasks.list)" in result.stdout
    assert re.search(r"HTTP calls per task: \d+\.\d\d", result.stdout)


def test_the_warning_filter_the_readme_gives_scripts_makes_an_unknown_option_an_error(tmp_path):
    [block] = [code for _, code in blocks("python") if 'filterwarnings("error"' in code]
    check = block + (
        "from kombu import Connection\n"
        "options = {'api_endpoint': 'http://127.0.0.1:9', 'visibility_timeout': 30}\n"
        "try:\n"
        "    Connection(transport='kombu_appengine:Transport', transport_options=options).default_channel\n"
        "except UnknownTransportOptionWarning as warning:\n"
        "    print('raised:', warning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "raised: kombu_appengine ignores the unknown transport option 'visibility_timeout'"
    )


def test_the_readme_says_what_pythons_own_w_option_does_with_the_warning(tmp_path):
    option = "error::kombu_appengine.errors.UnknownTransportOptionWarning"
    result = subprocess.run(
        [sys.executable, "-W", option, "-c", "pass"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "Invalid -W option ignored" in result.stderr
    assert f"`python -W {option}`\nprints `Invalid -W option ignored`" in README


def test_the_queues_section_warns_that_names_differing_in_punctuation_share_a_pull_queue():
    from kombu_appengine.names import pull_queue_name

    assert {pull_queue_name(name) for name in ("a.b", "a_b", "a:b", "a-b")} == {"a-b"}
    section = README[README.index("\n## Queues\n") : README.index("\n## The emulator\n")]
    warning = " ".join(line.lstrip("> ") for line in section.splitlines() if line.startswith(">"))
    assert warning.startswith("**Warning: names that differ only in punctuation are one queue.**")
    assert "`a.b`, `a_b`, `a:b` and `a-b` are all the pull queue `a-b`" in warning
