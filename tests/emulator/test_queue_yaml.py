"""Reading an App Engine ``queue.yaml``: what pull queues take from it, what
push-queue settings are ignored, and errors that name the file and queue."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from googleapiclient.errors import HttpError

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.emulator.queue_yaml import QueueYamlError, load_queue_yaml, parse_queue_yaml
from tests.support.helpers import MakeEmulator, build_service

#: A queue.yaml as real App Engine applications wrote them.
REALISTIC = textwrap.dedent("""\
    # Queues of the image pipeline.
    total_storage_limit: 120M

    queue:
    - name: default
      rate: 5/s
      bucket_size: 40

    - name: thumbnails
      mode: pull
      acl:
      - user_email: worker@example.com
      - user_email: batch@example.com
      - writer_email: app@example.com
      retry_parameters:
        task_retry_limit: 7

    - name: mail
      mode: push
      rate: 2000/d
      bucket_size: 10
      max_concurrent_requests: 3
      target: mailer
      retry_parameters:
        task_retry_limit: 3
        task_age_limit: 2d
        min_backoff_seconds: 10
        max_doublings: 4

    - name: audit-log
      mode: pull
""")


def write(tmp_path: pathlib.Path, text: str, name: str = "queue.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_realistic_queue_yaml(tmp_path: pathlib.Path) -> None:
    configs = {config.name: config for config in load_queue_yaml(write(tmp_path, REALISTIC))}
    assert list(configs) == ["default", "thumbnails", "mail", "audit-log"]

    thumbnails = configs["thumbnails"]
    assert thumbnails.mode == "pull"
    assert thumbnails.max_leases == 7
    assert thumbnails.consumer_emails == ["worker@example.com", "batch@example.com"]
    assert thumbnails.producer_emails == ["app@example.com"]

    audit = configs["audit-log"]
    assert (audit.mode, audit.max_leases, audit.consumer_emails, audit.producer_emails) == (
        "pull",
        None,
        [],
        [],
    )

    # Push queues are reported, with their push settings ignored.
    assert configs["default"].mode == "push"
    assert configs["mail"].mode == "push"


def test_mode_defaults_to_push() -> None:
    (config,) = parse_queue_yaml({"queue": [{"name": "plain", "rate": "1/s"}]})
    assert config.mode == "push"


def test_acl_entry_with_both_emails_counts_for_both() -> None:
    (config,) = parse_queue_yaml(
        {
            "queue": [
                {
                    "name": "q",
                    "mode": "pull",
                    "acl": [{"user_email": "a@example.com", "writer_email": "b@example.com"}],
                }
            ]
        }
    )
    assert config.consumer_emails == ["a@example.com"]
    assert config.producer_emails == ["b@example.com"]


def test_task_retry_limit_zero_is_kept() -> None:
    (config,) = parse_queue_yaml(
        {"queue": [{"name": "q", "mode": "pull", "retry_parameters": {"task_retry_limit": 0}}]}
    )
    assert config.max_leases == 0


@pytest.mark.parametrize("text", ["", "# only a comment\n", "total_storage_limit: 5M\n", "queue:\n"])
def test_file_without_queues_declares_none(tmp_path: pathlib.Path, text: str) -> None:
    assert load_queue_yaml(write(tmp_path, text)) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("queue:\n- mode: pull\n", ["queue #1", "name"]),
        ("queue:\n- name: ok\n  mode: pull\n- rate: 1/s\n", ["queue #2", "name"]),
        ("queue:\n- name: 42\n", ["queue #1", "name"]),
        ("queue:\n- name: bad_name\n  mode: pull\n", ["'bad_name'", "queue name"]),
        (
            "queue:\n- name: q\n  mode: pull\n  retry_parameters:\n    task_retry_limit: often\n",
            ["'q'", "task_retry_limit"],
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  retry_parameters:\n    task_retry_limit: 2.5\n",
            ["'q'", "task_retry_limit"],
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  retry_parameters:\n    task_retry_limit: true\n",
            ["'q'", "task_retry_limit"],
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  retry_parameters:\n    task_retry_limit: -1\n",
            ["'q'", "task_retry_limit"],
        ),
        ("queue:\n- name: q\n  mode: sideways\n", ["'q'", "mode"]),
        ("queue:\n- name: q\n  mode: pull\n  acl:\n  - just-a-string\n", ["'q'", "acl"]),
        ("queue: [unclosed\n", ["not valid YAML"]),
        ("queue:\n\t- name: tab\n", ["not valid YAML"]),
        ("- name: q\n", ["mapping"]),
        ("queue: default\n", ["list"]),
        ("queue:\n- name: 12345\n", ["queue #1", "name must be a string, not a number"]),
        ("queue:\n- name: [a, b]\n", ["queue #1", "name must be a string, not a list"]),
        ("queue:\n- name: q\n  mode: pull\n- name: r\n- name: q\n", ["'q'", "queues #1 and #3"]),
        (
            "queue:\n- name: q\n  mode: pull\n  acl:\n  - reader_email: a@example.com\n",
            ["'q'", "'reader_email'"],
        ),
        (
            "queue:\n- name: q\n  mode: pull\n  acl:\n  - user_email: [a@example.com]\n",
            ["'q'", "user_email", "string"],
        ),
        ("queue:\n- name: q\n  mode: pull\n  acl: app@example.com\n", ["'q'", "acl", "list"]),
        ("queue:\n- name: q\n  mode: pull\n  retry_parameters: 7\n", ["'q'", "retry_parameters", "mapping"]),
        ("queue:\n- name: q\n  mode: [pull]\n", ["'q'", "mode"]),
        ("queue: " + "[" * 5000 + "]" * 5000 + "\n", ["not valid YAML", "nested too deeply"]),
    ],
)
def test_errors_name_the_file_and_the_queue(tmp_path: pathlib.Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(QueueYamlError) as raised:
        load_queue_yaml(path)
    message = str(raised.value)
    assert message.startswith(path + ":"), message
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message.split(":", 1)[0]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00q\x00u\x00", b"queue:\n- name: caf\xe9\n"])
def test_a_file_that_is_not_utf8_text_is_an_error_naming_it(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "queue.yaml"
    path.write_bytes(content)
    with pytest.raises(QueueYamlError) as raised:
        load_queue_yaml(str(path))
    assert str(raised.value).startswith(f"{path}: ")


def test_missing_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "nowhere" / "queue.yaml")
    with pytest.raises(QueueYamlError) as raised:
        load_queue_yaml(path)
    assert str(raised.value).startswith(path + ": cannot read")


def test_queue_yaml_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="name"):
        parse_queue_yaml({"queue": [{}]})


def test_parse_error_names_the_given_path() -> None:
    with pytest.raises(QueueYamlError, match=r"^app/queue\.yaml: queue #1 has no name"):
        parse_queue_yaml({"queue": [{}]}, "app/queue.yaml")


def test_running_emulator_reports_max_leases_and_acl(
    make_emulator: MakeEmulator, tmp_path: pathlib.Path
) -> None:
    running = make_emulator(queue_yaml=write(tmp_path, REALISTIC))
    service = build_service(running.url)
    queue = service.taskqueues().get(project="demo", taskqueue="thumbnails").execute()
    assert queue["kind"] == "taskqueues#taskqueue"
    assert queue["id"] == "thumbnails"
    assert queue["maxLeases"] == 7
    assert queue["acl"]["consumerEmails"] == ["worker@example.com", "batch@example.com"]
    assert queue["acl"]["producerEmails"] == ["app@example.com"]

    audit = service.taskqueues().get(project="s~demo", taskqueue="audit-log").execute()
    assert "maxLeases" not in audit
    assert audit["acl"]["consumerEmails"] == []


def test_running_emulator_refuses_push_queues_from_the_file(
    make_emulator: MakeEmulator, tmp_path: pathlib.Path
) -> None:
    running = make_emulator(queue_yaml=write(tmp_path, REALISTIC))
    service = build_service(running.url)
    for name in ("default", "mail"):
        with pytest.raises(HttpError) as raised:
            service.tasks().list(project="demo", taskqueue=name).execute()
        assert raised.value.resp.status == 400
        assert "not a pull queue" in str(raised.value)


def test_emulator_takes_queues_from_file_and_arguments(
    make_emulator: MakeEmulator, tmp_path: pathlib.Path
) -> None:
    running = make_emulator(queues=["extra"], queue_yaml=write(tmp_path, REALISTIC))
    service = build_service(running.url)
    assert service.taskqueues().get(project="demo", taskqueue="extra").execute()["id"] == "extra"
    assert service.taskqueues().get(project="demo", taskqueue="thumbnails").execute()["maxLeases"] == 7


def test_max_leases_from_the_file_deletes_over_leased_tasks(
    make_emulator: MakeEmulator, tmp_path: pathlib.Path
) -> None:
    text = "queue:\n- name: twice\n  mode: pull\n  retry_parameters:\n    task_retry_limit: 2\n"
    running = make_emulator(queue_yaml=write(tmp_path, text))
    service = build_service(running.url)
    service.tasks().insert(project="demo", taskqueue="twice", body={"id": "t", "payloadBase64": ""}).execute()
    for expected_count in (1, 2):
        (task,) = (
            service.tasks()
            .lease(project="demo", taskqueue="twice", numTasks=1, leaseSecs=0)
            .execute()["items"]
        )
        assert task["retry_count"] == expected_count
    assert (
        "items"
        not in service.tasks().lease(project="demo", taskqueue="twice", numTasks=1, leaseSecs=0).execute()
    )
    assert service.tasks().list(project="demo", taskqueue="twice").execute().get("items", []) == []


def test_queue_config_is_what_the_file_gives() -> None:
    (config,) = parse_queue_yaml({"queue": [{"name": "q", "mode": "pull"}]})
    assert config == QueueConfig("q")
