"""What consuming costs in HTTP calls: one lease serves num_tasks messages."""

from __future__ import annotations

import pytest

from tests.support.transport import connect, prefill, total_tasks


@pytest.mark.parametrize("num_tasks", [1, 5, 10])
def test_http_calls_per_consumed_message(emulator, num_tasks):
    count = 30
    prefill(emulator, count)
    with connect(emulator, num_tasks=num_tasks) as connection:
        queue = connection.SimpleQueue("default")
        before = emulator.requests
        for _ in range(count):
            queue.get(block=False).ack()
        calls = emulator.requests - before
        queue.close()
    assert calls / count <= 1 + 1 / num_tasks
    assert total_tasks(emulator) == 0
