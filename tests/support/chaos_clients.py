"""The chaos test's producers and kombu consumers, each a process of its own:
``python -m tests.support.chaos_clients COMMAND --endpoint URL --queue NAME ...``.

* ``produce-kombu --numbers FIRST:STEP:COUNT``: publishes ``{"n": N}`` with a
  kombu ``Producer``, retrying as Celery does (``publish(retry=True)``).
* ``produce-rest --numbers ...``: inserts raw payloads over plain REST, as
  App Engine code or a shell script would: JSON ``{"n": N}`` for even N, bytes
  that are not text for odd N. Each task has its own name, so a retried
  insert that had in fact been carried out is refused (409), not doubled.
* ``consume --record FILE``: consumes as kombu users do, with a
  :class:`kombu.mixins.ConsumerMixin` (a ``Consumer`` with acknowledgements,
  reconnecting whenever the connection fails), until SIGTERM. Each
  processing is one JSON line appended to FILE: the payload's number, the
  task and its retry count, when the processing started and finished, and
  how its ack ended. When the transport's retries run out (a long outage),
  kombu logs ``Connection to broker lost`` and the consumer reconnects.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import time
import urllib.parse
from typing import Any

from kombu import Connection, Queue
from kombu.mixins import ConsumerMixin

from tests.support.helpers import b64
from tests.support.worker_jobs import append_line, number_of

#: The project the transport uses with an emulator.
PROJECT = "emulator"
#: Attempts of one REST insert before the producer gives up.
INSERT_ATTEMPTS = 30


class ChaosConsumer(ConsumerMixin):
    """Records every message it processes, then acknowledges it."""

    def __init__(self, connection: Connection, queue: str, record: str) -> None:
        self.connection = connection
        self.queue = Queue(queue)
        self.record = record

    def get_consumers(self, consumer: Any, channel: Any) -> list[Any]:
        return [consumer(queues=[self.queue], on_message=self.process)]

    def process(self, message: Any) -> None:
        event = {
            "kind": "kombu",
            "start": time.time(),
            "n": number_of(message.decode()),
            "pid": os.getpid(),
            "task": message.delivery_info["task_id"],
            "retry_count": message.delivery_info["retry_count"],
        }
        event["finish"] = time.time()
        try:
            message.ack()
            event["ack"] = "ok"
        except Exception as error:
            event["ack"] = repr(error)
            raise
        finally:
            event["acked"] = time.time()
            append_line(self.record, event)


def consume(options: dict[str, Any], queue: str, record: str) -> None:
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        consumer = ChaosConsumer(connection, queue, record)

        def stop(signum: int, frame: Any) -> None:
            consumer.should_stop = True

        signal.signal(signal.SIGTERM, stop)
        consumer.run()


def produce_kombu(options: dict[str, Any], queue: str, numbers: range) -> None:
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        producer = connection.Producer(serializer="json")
        for number in numbers:
            producer.publish(
                {"n": number},
                routing_key=queue,
                retry=True,
                retry_policy={"max_retries": 10, "interval_start": 0.1, "interval_step": 0.5},
            )


def produce_rest(endpoint: str, queue: str, numbers: range) -> None:
    url = urllib.parse.urlsplit(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    path = f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{queue}/tasks"
    for number in numbers:
        if number % 2 == 0:
            name, payload = f"raw-json-{number}", json.dumps({"n": number}).encode()
        else:
            name, payload = f"raw-bytes-{number}", b"\x00\xffchaos-%d" % number
        body = json.dumps({"id": name, "queueName": queue, "payloadBase64": b64(payload)})
        for attempt in range(INSERT_ATTEMPTS):
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
            else:
                # 409 to a retry: an earlier attempt was carried out.
                if response.status == 200 or (response.status == 409 and attempt > 0):
                    break
                if response.status not in (429, 503):
                    raise SystemExit(f"insert of {name} answered {response.status}: {answer!r}")
            time.sleep(min(0.05 * 2**attempt, 2.0))  # the retry's backoff
        else:
            raise SystemExit(f"could not insert {name} in {INSERT_ATTEMPTS} attempts")
    connection.close()


def _numbers(text: str) -> range:
    first, step, count = (int(part) for part in text.split(":"))
    return range(first, first + step * count, step)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["consume", "produce-kombu", "produce-rest"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--record")
    parser.add_argument("--numbers", type=_numbers)
    parser.add_argument("--lease-secs", type=int, default=60)
    parser.add_argument("--num-tasks", type=int, default=10)
    parser.add_argument("--max-retries", type=int, help="the transport's; its own default when not given")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = {
        "api_endpoint": args.endpoint,
        "lease_secs": args.lease_secs,
        "num_tasks": args.num_tasks,
        "polling_interval": 0.05,
    }
    if args.max_retries is not None:
        options["request_retries"] = args.max_retries
    if args.command == "consume":
        consume(options, args.queue, args.record)
    elif args.command == "produce-kombu":
        produce_kombu(options, args.queue, args.numbers)
    else:
        produce_rest(args.endpoint, args.queue, args.numbers)


if __name__ == "__main__":
    main()
