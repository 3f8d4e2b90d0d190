#!/usr/bin/env python3
"""Benchmark the gateway (App Engine's task queue stub) beside the emulator, in one run, over loopback.

Run it with the ``gateway`` extra installed (``pip install -e '.[gateway]'``)::

    scripts/bench_gateway.py                     # 2000 messages, num_tasks 10
    scripts/bench_gateway.py --messages 500 --num-tasks 100

Against each server, in turn and in the same process, through kombu's
``SimpleQueue`` over HTTP:

* publish: ``put`` of ``--messages`` messages (one ``tasks.insert`` each);
* consume: ``get`` and ``ack`` of all of them, up to the close that sends
  the last batch of acks (one ``tasks.lease`` per ``num_tasks`` messages;
  the deletes go in batch calls of up to ``ack_batch_size``, each one HTTP
  call, and the gateway deletes each batch's tasks of a queue in one RPC).

It prints, per server, HTTP calls per second and messages per second of each
loop, the HTTP calls per consumed message, and the ratio emulator/gateway.
Times depend on the machine; the calls per message do not: the script exits
with status 1 when either server needed more calls than one lease per
``num_tasks`` and one batch per ``ack_batch_size`` acks, plus two (the lease
asked ahead that finds the queue empty, and the last, partial batch), or
lost a message.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from kombu import Connection

from kombu_appengine.emulator import Emulator
from kombu_appengine.gateway.local import LocalGateway
from kombu_appengine.transport.leases import leases_needed
from kombu_appengine.transport.options import Settings

#: The pull queue the benchmark fills and drains.
QUEUE = "bench"


def run(server: Any, messages: int, num_tasks: int) -> dict[str, float]:
    """Publish then consume ``messages`` through ``server``; rates and counts."""
    options = {"api_endpoint": server.url, "num_tasks": num_tasks, "polling_interval": 0.01}
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        queue = connection.SimpleQueue(QUEUE)
        before, started = server.requests, time.perf_counter()
        for number in range(messages):
            queue.put({"n": number})
        publish_seconds, publish_calls = time.perf_counter() - started, server.requests - before
        seen = set()
        before, started = server.requests, time.perf_counter()
        while len(seen) < messages:
            message = queue.get(timeout=10)
            seen.add(message.payload["n"])
            message.ack()
        # Closing sends the acks still waiting for their batch: they count.
        queue.close()
        consume_seconds, consume_calls = time.perf_counter() - started, server.requests - before
    return {
        "publish calls/s": publish_calls / publish_seconds,
        "publish msgs/s": messages / publish_seconds,
        "consume calls/s": consume_calls / consume_seconds,
        "consume msgs/s": messages / consume_seconds,
        "calls per consumed message": consume_calls / messages,
        "lost": messages - len(seen),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--num-tasks", type=int, default=10)
    args = parser.parse_args(argv)
    results = {}
    with Emulator(queues=[QUEUE]) as emulator:
        results["emulator"] = run(emulator, args.messages, args.num_tasks)
    with LocalGateway(queues=[QUEUE]) as gateway:
        results["gateway"] = run(gateway, args.messages, args.num_tasks)
    print(f"{'':28}{'emulator':>12}{'gateway':>12}{'ratio':>8}")
    for key in results["emulator"]:
        emulator_value, gateway_value = results["emulator"][key], results["gateway"][key]
        ratio = f"{emulator_value / gateway_value:8.2f}" if gateway_value else ""
        places = 4 if key == "calls per consumed message" else 2
        print(f"{key:28}{emulator_value:12.{places}f}{gateway_value:12.{places}f}{ratio}")
    leases = leases_needed(args.messages, args.num_tasks)
    bound = (leases + math.ceil(args.messages / Settings.ack_batch_size) + 2) / args.messages
    failed = False
    for name, figures in results.items():
        ok = figures["calls per consumed message"] <= bound and not figures["lost"]
        failed |= not ok
        print(
            f"{name}: HTTP calls per consumed message {figures['calls per consumed message']:.4f} "
            f"(bound {bound:.4f}), lost {figures['lost']:.0f}: {'ok' if ok else 'FAILED'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
