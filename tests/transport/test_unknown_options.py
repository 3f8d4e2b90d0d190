"""Unknown transport options: ignored, with a warning naming the nearest known option.

Every connection is a real kombu ``Connection`` to the emulator fixture.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from kombu_appengine import transport
from kombu_appengine.emulator import Emulator
from kombu_appengine.errors import UnknownTransportOptionWarning
from kombu_appengine.transport import Settings


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in the block, none filtered out."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def ours(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UnknownTransportOptionWarning)]


def round_trip(url: str, options: Mapping[str, Any]) -> list[str]:
    """Put and get one message on ``default`` with ``options``; the unknown-option warnings raised."""
    with (
        recorded_warnings() as caught,
        Connection(
            transport="kombu_appengine:Transport", transport_options={"api_endpoint": url, **options}
        ) as conn,
    ):
        queue = conn.SimpleQueue("default")
        queue.put({"n": 1})
        message = queue.get(timeout=10)
        assert message.payload == {"n": 1}
        message.ack()
    return ours(caught)


def test_the_known_options_are_the_ones_the_manual_lists():
    documented = set(re.findall(r"^\* ``(\w+)``", transport.__doc__ or "", re.MULTILINE))
    assert Settings.option_names() == documented


def test_known_options_do_not_warn(emulator: Emulator):
    options = {
        "project_name": "emulator",
        "hrd_project": False,
        "num_tasks": 5,
        "lease_secs": 30,
        "polling_interval": 0.1,
        "shared_queue": "other",
        "message_format": "kombu",
        "request_retries": 2,
    }
    assert round_trip(emulator.url, options) == []


@pytest.mark.parametrize(
    ("option", "nearest"),
    [
        ("visibility_timeout", "lease_secs"),
        ("ack_deadline_seconds", "lease_secs"),
        ("bulk_max_messages", "num_tasks"),
        ("wait_time_seconds", "polling_interval"),
        ("project_id", "project_name"),
        ("region", "project_name"),
        ("predefined_queues", "shared_queue"),
        ("num_task", "num_tasks"),
        ("lease_seconds", "lease_secs"),
        ("shared_queues", "shared_queue"),
        ("credential_file", "credentials_file"),
    ],
)
def test_an_unknown_option_warns_once_naming_it_and_the_nearest_option(
    emulator: Emulator, option: str, nearest: str
):
    warned = round_trip(emulator.url, {option: 7})
    assert len(warned) == 1, warned
    assert f"unknown transport option {option!r}" in warned[0]
    assert f"{nearest!r}" in warned[0]


def test_options_of_other_transports_say_where_they_come_from(emulator: Emulator):
    (warned,) = round_trip(emulator.url, {"visibility_timeout": 3600})
    assert warned == (
        "kombu_appengine ignores the unknown transport option 'visibility_timeout': "
        "an option of kombu's SQS and Redis transports; the nearest here is 'lease_secs'"
    )


def test_an_option_like_none_of_ours_lists_them_all(emulator: Emulator):
    (warned,) = round_trip(emulator.url, {"colour": "blue"})
    assert "'colour'" in warned
    for name in Settings.option_names():
        assert name in warned


def test_every_unknown_option_gets_its_own_warning(emulator: Emulator):
    warned = round_trip(emulator.url, {"visibility_timeout": 1, "num_task": 1})
    assert len(warned) == 2
    assert "'num_task'" in warned[0]
    assert "'visibility_timeout'" in warned[1]


def test_the_warning_can_be_filtered_by_its_category(emulator: Emulator):
    assert issubclass(UnknownTransportOptionWarning, UserWarning)
    with recorded_warnings() as caught:
        warnings.filterwarnings("ignore", category=UnknownTransportOptionWarning)
        options = {"api_endpoint": emulator.url, "visibility_timeout": 1}
        with Connection(transport="kombu_appengine:Transport", transport_options=options) as conn:
            assert conn.default_channel.settings.lease_secs == 60
    assert ours(caught) == []


def test_options_kombu_sets_itself_do_not_warn(emulator: Emulator):
    retry_policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}
    options = {"api_endpoint": emulator.url, "connect_retries_timeout": 5, "body_encoding": "base64"}
    with (
        recorded_warnings() as caught,
        Connection(transport="kombu_appengine:Transport", transport_options=options) as conn,
    ):
        with conn.Producer() as producer:
            # publish(retry=True) copies the retry policy into the connection's options ...
            producer.publish({"n": 1}, routing_key="default", retry=True, retry_policy=retry_policy)
        assert retry_policy.items() <= conn.transport_options.items()
        # ... which a reconnection then hands to a new transport.
        with conn.clone() as again:
            assert again.SimpleQueue("default").get(timeout=10).payload == {"n": 1}
    assert ours(caught) == []


def test_a_celery_app_configured_as_the_readme_says_does_not_warn(emulator: Emulator):
    for queue in ("celery", "shared"):
        emulator.declare_queue(queue)
    app = Celery("tasks", broker="appengine://my-app", set_as_current=False)
    app.conf.update(
        broker_transport_options={"shared_queue": "shared", "lease_secs": 60, "api_endpoint": emulator.url},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
    )
    with app, recorded_warnings() as caught, app.producer_or_acquire() as producer:
        app.send_task("tasks.add", (2, 3), producer=producer)
        # Celery publishes with its retry policy, which kombu copies into the connection's options ...
        assert app.conf.task_publish_retry_policy.items() <= producer.connection.transport_options.items()
        # ... and a reconnection hands them to a new transport.
        with app.connection_for_write(transport_options=producer.connection.transport_options) as again:
            assert again.SimpleQueue("celery").get(timeout=10).headers["task"] == "tasks.add"
    assert ours(caught) == []
