"""Transport options: checked once, with errors that name the option; and the
emulator given by the environment instead of options."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from kombu_appengine.errors import ConfigurationError, QueueNotFound
from kombu_appengine.transport import Transport
from tests.support.transport import EMULATOR_HOST_ENV, connect, total_tasks


def _transport_of(options: dict[str, Any]) -> Transport:
    connection = Connection(transport="kombu_appengine:Transport", transport_options=options)
    return connection.transport


def test_missing_project_name_without_an_emulator_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    connection = Connection(transport="kombu_appengine:Transport")
    with pytest.raises(ConfigurationError) as failure:
        connection.connect()
    text = str(failure.value)
    assert "project_name" in text
    assert EMULATOR_HOST_ENV in text


def test_emulator_from_the_environment_needs_no_project_or_credentials(emulator, monkeypatch):
    monkeypatch.setenv(EMULATOR_HOST_ENV, emulator.host)
    with Connection(
        transport="kombu_appengine:Transport", transport_options={"polling_interval": 0.05}
    ) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"via": "environment"})
        assert total_tasks(emulator) == 1
        queue.get(timeout=5).ack()
        queue.close()
    assert total_tasks(emulator) == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_tasks", 0),
        ("num_tasks", 1001),
        ("num_tasks", "many"),
        ("lease_secs", "abc"),
        ("lease_secs", 0),
        ("message_format", "xml"),
        ("hrd_project", "maybe"),
        ("shared_queue", ""),
        ("polling_interval", -1),
        ("polling_interval", "soon"),
        ("request_retries", -1),
        # Found by a hostile review: each was a traceback, or silently rounded.
        ("lease_secs", float("inf")),
        ("num_tasks", float("nan")),
        ("request_retries", float("inf")),
        ("num_tasks", 10.5),
        ("lease_secs", 1.9),
        ("ack_batch_size", "2.5"),
        ("api_endpoint", 5),
        ("api_endpoint", "ftp://127.0.0.1:1"),
        ("api_endpoint", "http://127.0.0.1:1/extra"),
        # Found by a hostile review: an OverflowError at connect, and a
        # connection error that kombu and Celery retry for ever.
        ("api_endpoint", "http://127.0.0.1:99999"),
        ("api_endpoint", "http://127.0.0.1:abc"),
        ("api_endpoint", "127.0.0.1:0"),
        ("api_endpoint", "http://:8123"),
        ("credentials_file", 5),
    ],
)
def test_bad_option_values_are_clear_errors_naming_the_option(emulator, option, value):
    with pytest.raises(ConfigurationError) as failure:
        _transport_of({"api_endpoint": emulator.url, option: value})
    text = str(failure.value)
    assert option in text
    assert repr(value) in text
    assert isinstance(failure.value, ValueError)


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1:8123/taskqueue", "ftp://127.0.0.1:8123", "127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1:0"],
)
def test_a_bad_emulator_host_in_the_environment_is_a_clear_error_naming_the_variable(monkeypatch, value):
    # Checked as api_endpoint is: a path was taken silently (every call then
    # reported a missing queue), the rest failed at connect without naming it.
    monkeypatch.setenv(EMULATOR_HOST_ENV, value)
    with pytest.raises(ConfigurationError) as failure:
        _transport_of({})
    text = str(failure.value)
    assert EMULATOR_HOST_ENV in text
    assert repr(value) in text


def test_api_endpoint_is_used_and_checked_instead_of_the_environment(emulator, monkeypatch):
    monkeypatch.setenv(EMULATOR_HOST_ENV, "127.0.0.1:99999")
    assert _transport_of({"api_endpoint": emulator.url}).settings.root_url == emulator.url + "/"
    monkeypatch.setenv(EMULATOR_HOST_ENV, emulator.host)
    with pytest.raises(ConfigurationError, match="transport option api_endpoint"):
        _transport_of({"api_endpoint": "http://127.0.0.1:99999"})


def test_good_option_values_given_as_strings_are_accepted(emulator):
    transport = _transport_of(
        {
            "api_endpoint": emulator.url,
            "num_tasks": "7",
            "lease_secs": "30",
            "hrd_project": "true",
            "project_name": "app",
        }
    )
    assert (transport.settings.num_tasks, transport.settings.lease_secs) == (7, 30)
    assert transport.settings.project == "s~app"


def test_polling_interval_reaches_the_transport(emulator):
    assert _transport_of({"api_endpoint": emulator.url, "polling_interval": "0.25"}).polling_interval == 0.25
    assert _transport_of({"api_endpoint": emulator.url}).polling_interval == 1.0


def test_a_missing_shared_queue_is_named_as_such(emulator):
    with (
        connect(emulator, shared_queue="no-such-shared") as connection,
        pytest.raises(QueueNotFound) as failure,
    ):
        connection.SimpleQueue("reply.queue").put({"n": 1})
    text = str(failure.value)
    assert "shared_queue 'no-such-shared' does not exist" in text
    assert "queue.yaml" in text


def test_an_option_name_that_is_not_text_is_a_clear_error(emulator):
    with pytest.raises(ConfigurationError, match="option names must be strings"):
        _transport_of({"api_endpoint": emulator.url, None: 1})


@pytest.mark.parametrize("project", ["s~my-app", "e~my-app"])
def test_hrd_project_keeps_a_prefix_already_given(emulator, project):
    transport = _transport_of({"api_endpoint": emulator.url, "project_name": project, "hrd_project": True})
    assert transport.settings.project == project


def test_whole_numbers_given_as_floats_or_text_are_taken(emulator):
    transport = _transport_of({"api_endpoint": emulator.url, "num_tasks": 10.0, "lease_secs": "30"})
    assert (transport.settings.num_tasks, transport.settings.lease_secs) == (10, 30)


def test_kombus_max_retries_is_not_the_transports_request_retries(emulator):
    # kombu keeps its reconnection setting under max_retries in the same
    # options (None: for ever); a publish with a retry policy writes it there.
    transport = _transport_of({"api_endpoint": emulator.url, "max_retries": None, "request_retries": 7})
    assert transport.settings.request_retries == 7
    assert transport.client_for_channels.max_retries == 7
