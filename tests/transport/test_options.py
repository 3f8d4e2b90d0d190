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
        ("max_retries", -1),
    ],
)
def test_bad_option_values_are_clear_errors_naming_the_option(emulator, option, value):
    with pytest.raises(ConfigurationError) as failure:
        _transport_of({"api_endpoint": emulator.url, option: value})
    text = str(failure.value)
    assert option in text
    assert repr(value) in text
    assert isinstance(failure.value, ValueError)


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
