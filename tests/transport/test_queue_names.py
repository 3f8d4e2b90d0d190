"""Which pull queue a kombu queue lives on: its own (by the translated name),
a tag on shared_queue, or none (a clear error); and the project sent (hrd_project)."""

from __future__ import annotations

from queue import Empty

import pytest

from kombu_appengine.errors import QueueNotFound, TaskQueueChannelError
from kombu_appengine.names import MAX_QUEUE_NAME, pull_queue_name
from tests.support.helpers import wait_for
from tests.support.transport import PROJECT, connect, listed, total_tasks


def test_queue_without_pull_queue_lives_as_tagged_tasks_on_shared_queue(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        reply = connection.SimpleQueue("celery.reply.abc123")
        reply.put({"result": 42})
        items = listed(emulator, "pull-queue")
        assert [task.get("tag") for task in items] == ["celery.reply.abc123"]
        assert total_tasks(emulator, "default") == 0
        assert reply.qsize() == 1
        message = reply.get(timeout=5)
        assert message.payload == {"result": 42}
        assert message.delivery_info["routing_key"] == "celery.reply.abc123"
        message.ack()
        wait_for(lambda: total_tasks(emulator, "pull-queue") == 0, what="the acked reply deleted")
        reply.close()


def test_two_kombu_queues_on_one_shared_queue_do_not_see_each_other(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        first = connection.SimpleQueue("first_queue.x")
        second = connection.SimpleQueue("second_queue.y")
        first.put({"for": "first", "n": 1})
        second.put({"for": "second"})
        first.put({"for": "first", "n": 2})
        assert first.qsize() == 2
        assert second.qsize() == 1

        got_first = [first.get(timeout=5), first.get(timeout=5)]
        assert [message.payload for message in got_first] == [
            {"for": "first", "n": 1},
            {"for": "first", "n": 2},
        ]
        with pytest.raises(Empty):
            first.get(block=False)
        got_second = second.get(timeout=5)
        assert got_second.payload == {"for": "second"}
        with pytest.raises(Empty):
            second.get(block=False)

        for message in got_first:
            message.ack()
        got_second.requeue()
        connection.default_channel.flush()
        second_on_shared = listed(emulator, "pull-queue")
        assert [task["tag"] for task in second_on_shared] == ["second_queue.y"]
        assert second_on_shared[0]["leaseTimestamp"] == "0"
        assert second.clear() == 1
        assert total_tasks(emulator, "pull-queue") == 0
        first.close()
        second.close()


def test_a_queue_whose_own_pull_queue_is_the_shared_queue_takes_only_its_own_tasks(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        reply = connection.SimpleQueue("celery.reply.abc123")
        own = connection.SimpleQueue("pull-queue")
        reply.put({"result": 42})
        own.put({"job": 1})
        message = own.get(timeout=5)
        assert message.payload == {"job": 1}
        with pytest.raises(Empty):
            own.get(block=False)
        message.requeue()
        assert own.clear() == 1
        assert [task["tag"] for task in listed(emulator, "pull-queue")] == ["celery.reply.abc123"]
        assert reply.get(timeout=5).payload == {"result": 42}
        own.close()
        reply.close()


def test_a_queue_that_is_a_pull_queue_is_used_directly_even_with_shared_queue(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        connection.SimpleQueue("other").put({"n": 1})
    assert total_tasks(emulator, "other") == 1
    assert total_tasks(emulator, "pull-queue") == 0
    assert "tag" not in listed(emulator, "other")[0]


def test_unknown_queue_without_shared_queue_fails_naming_queue_project_and_remedy(emulator):
    with connect(emulator) as connection:
        with pytest.raises(QueueNotFound) as failure:
            connection.SimpleQueue("no_such.queue")
        text = str(failure.value)
        assert "no_such.queue" in text
        assert repr(PROJECT) in text
        assert "queue.yaml" in text
        assert "shared_queue" in text
        assert isinstance(failure.value, tuple(connection.channel_errors))
        with pytest.raises(tuple(connection.channel_errors)) as passive:
            connection.default_channel.queue_declare("no_such.queue", passive=True)
        assert "no_such.queue" in str(passive.value)


def test_hrd_project_sends_the_s_tilde_prefix(emulator):
    # The emulator treats s~app and app as one project; a fault that only a
    # request whose path names s~my-app can meet shows what was sent.
    with connect(emulator, project_name="my-app", hrd_project=True) as connection:
        channel = connection.default_channel
        emulator.inject_failures(1, status=400, reason="invalid", path_contains="/projects/s~my-app/")
        with pytest.raises(TaskQueueChannelError, match="Injected failure"):
            channel.queue_declare("default")
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        assert total_tasks(emulator, project="my-app") == 1
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    assert total_tasks(emulator, project="my-app") == 0


def test_without_hrd_project_the_bare_project_is_sent(emulator):
    with connect(emulator, project_name="my-app") as connection:
        channel = connection.default_channel
        emulator.inject_failures(1, status=400, reason="invalid", path_contains="/projects/my-app/")
        with pytest.raises(TaskQueueChannelError, match="Injected failure"):
            channel.queue_declare("default")


def test_pull_queue_name_translation():
    assert pull_queue_name("my_app.tasks") == "my-app-tasks"
    assert pull_queue_name("celery.pidbox") == "celery-pidbox"
    assert pull_queue_name("already-legal-Name-09") == "already-legal-Name-09"
    long_one, long_two = "q" * 100 + ".one", "q" * 100 + ".two"
    translated = {pull_queue_name(long_one), pull_queue_name(long_two)}
    assert len(translated) == 2
    assert all(len(name) <= MAX_QUEUE_NAME for name in translated)
    assert all(
        set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
        for name in translated
    )
    assert len(pull_queue_name("x" * 100)) == 100
    assert pull_queue_name("x" * 100) == "x" * 100
    with pytest.raises(ValueError, match="empty"):
        pull_queue_name("")


def test_kombu_queue_names_reach_their_translated_pull_queue(emulator):
    emulator.declare_queue("my-app-tasks")
    long_name = "celery." + "long_" * 30
    emulator.declare_queue(pull_queue_name(long_name))
    with connect(emulator) as connection:
        connection.SimpleQueue("my_app.tasks").put({"n": 1})
        connection.SimpleQueue(long_name).put({"n": 2})
        assert total_tasks(emulator, "my-app-tasks") == 1
        assert total_tasks(emulator, pull_queue_name(long_name)) == 1
        message = connection.SimpleQueue("my_app.tasks").get(timeout=5)
        assert message.payload == {"n": 1}
        assert message.delivery_info["routing_key"] == "my_app.tasks"
        message.ack()
