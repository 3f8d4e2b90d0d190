"""Read the queues of an App Engine ``queue.yaml``.

Only ``name``, ``mode``, ``acl`` and ``retry_parameters.task_retry_limit``
matter for pull queues; push-queue settings are ignored.
"""

from __future__ import annotations

from typing import Any

import yaml

from .model import QueueConfig


class QueueYamlError(ValueError):
    """``queue.yaml`` cannot be read or does not declare queues properly."""


def load_queue_yaml(path: str) -> list[QueueConfig]:
    """Every queue declared in the ``queue.yaml`` at ``path``, push queues included.

    Raises:
        QueueYamlError: the file is missing, not YAML, or a queue is malformed;
            the message names the file and the queue.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
    except OSError as exc:
        raise QueueYamlError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise QueueYamlError(f"{path}: not valid YAML: {exc}") from None
    return parse_queue_yaml(document, path)


def parse_queue_yaml(document: Any, path: str = "queue.yaml") -> list[QueueConfig]:
    """The queues of an already parsed ``queue.yaml`` document."""
    if document is None:
        return []
    if not isinstance(document, dict):
        raise QueueYamlError(f"{path}: expected a mapping with a 'queue' list")
    entries = document.get("queue") or []
    if not isinstance(entries, list):
        raise QueueYamlError(f"{path}: 'queue' must be a list of queues")
    configs = []
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise QueueYamlError(f"{path}: queue #{position} has no name")
        name = entry["name"]
        consumers: list[str] = []
        producers: list[str] = []
        for rule in entry.get("acl") or []:
            if not isinstance(rule, dict):
                raise QueueYamlError(f"{path}: queue {name!r}: each acl entry must be a mapping")
            if "user_email" in rule:
                consumers.append(str(rule["user_email"]))
            if "writer_email" in rule:
                producers.append(str(rule["writer_email"]))
        retry = entry.get("retry_parameters") or {}
        limit = retry.get("task_retry_limit") if isinstance(retry, dict) else None
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise QueueYamlError(f"{path}: queue {name!r}: task_retry_limit must be an integer")
        try:
            configs.append(
                QueueConfig(
                    name=name,
                    mode=str(entry.get("mode", "push")),
                    max_leases=limit,
                    consumer_emails=consumers,
                    producer_emails=producers,
                )
            )
        except ValueError as exc:
            raise QueueYamlError(f"{path}: {exc}") from None
    return configs
