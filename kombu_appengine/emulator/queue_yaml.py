"""Read the queues of an App Engine ``queue.yaml``.

Only ``name``, ``mode``, ``acl`` and ``retry_parameters.task_retry_limit``
matter for pull queues; push-queue settings are ignored. Their shapes are
checked as App Engine checks them: a queue declared twice, an ``acl`` entry
with another key than ``user_email`` and ``writer_email``, or a
``retry_parameters`` that is not a mapping is an error naming the file and
the queue, not something silently read another way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from .model import QueueConfig

#: The keys of an ``acl`` entry, and the list of :class:`QueueConfig` each fills.
ACL_KEYS = {"user_email": "consumer_emails", "writer_email": "producer_emails"}


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
    except UnicodeDecodeError:
        raise QueueYamlError(f"{path}: not valid YAML: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise QueueYamlError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise QueueYamlError(f"{path}: not valid YAML: nested too deeply") from None
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
    seen: dict[str, int] = {}
    for position, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or "name" not in entry:
            raise QueueYamlError(f"{path}: queue #{position} has no name")
        name = entry["name"]
        if not isinstance(name, str):
            raise QueueYamlError(f"{path}: queue #{position}: name must be a string, not {_kind(name)}")
        if name in seen:
            raise QueueYamlError(
                f"{path}: queue {name!r} is declared twice (queues #{seen[name]} and #{position})"
            )
        seen[name] = position
        emails = _acl(entry.get("acl"), path, name)
        retry = entry.get("retry_parameters")
        if retry is not None and not isinstance(retry, dict):
            raise QueueYamlError(
                f"{path}: queue {name!r}: retry_parameters must be a mapping, not {_kind(retry)}"
            )
        limit = (retry or {}).get("task_retry_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise QueueYamlError(f"{path}: queue {name!r}: task_retry_limit must be an integer")
        mode = entry.get("mode", "push")
        if not isinstance(mode, str):
            raise QueueYamlError(f"{path}: queue {name!r}: mode must be pull or push, not {_kind(mode)}")
        try:
            configs.append(QueueConfig(name=name, mode=mode, max_leases=limit, **emails))
        except ValueError as exc:
            raise QueueYamlError(f"{path}: {exc}") from None
    return configs


def _acl(rules: Any, path: str, name: str) -> dict[str, list[str]]:
    """The emails of a queue's ``acl``, by the :class:`QueueConfig` field they fill.

    Raises:
        QueueYamlError: an ``acl`` that is not a list of mappings of
            ``user_email`` and ``writer_email`` to strings.
    """
    emails: dict[str, list[str]] = {field: [] for field in ACL_KEYS.values()}
    if rules is None:
        return emails
    if not isinstance(rules, list):
        raise QueueYamlError(f"{path}: queue {name!r}: acl must be a list of entries, not {_kind(rules)}")
    for rule in rules:
        if not isinstance(rule, dict):
            raise QueueYamlError(f"{path}: queue {name!r}: each acl entry must be a mapping")
        for key, value in rule.items():
            if key not in ACL_KEYS:
                raise QueueYamlError(
                    f"{path}: queue {name!r}: acl entry with the unknown key {str(key)[:100]!r}: "
                    "use user_email (may consume) or writer_email (may insert)"
                )
            if not isinstance(value, str):
                raise QueueYamlError(
                    f"{path}: queue {name!r}: acl {key} must be a string, not {_kind(value)}"
                )
            emails[ACL_KEYS[key]].append(value)
    return emails


def _kind(value: Any) -> str:
    """What kind of YAML value ``value`` is, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null" if value is None else type(value).__name__


def queue_configs(
    queues: Iterable[str | QueueConfig] = (), queue_yaml: str | None = None
) -> list[QueueConfig]:
    """The queues a server declares: those of ``queue_yaml`` (a path), then ``queues``.

    Raises:
        QueueYamlError: the file cannot be read or is malformed.
        ValueError: a queue name that is not a legal one.
    """
    configs = load_queue_yaml(queue_yaml) if queue_yaml else []
    return configs + [q if isinstance(q, QueueConfig) else QueueConfig(q) for q in queues]
