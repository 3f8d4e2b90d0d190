"""The one translation of kombu queue names into pull-queue names.

Pull-queue names are 1 to 100 characters of ``a-z A-Z 0-9 -``. kombu and
Celery use dots, underscores, colons and longer names (``celery.pidbox``,
``my_app.tasks``). :func:`pull_queue_name` maps every character outside the
alphabet to ``-`` (so ``my_app.tasks`` is the pull queue ``my-app-tasks``)
and shortens names over 100 characters to their first 91 characters, a
``-`` and 8 hex digits of the full name's SHA-1, so that long names stay
distinct.

The mapping is not one-to-one (``a.b`` and ``a_b`` are both ``a-b``):
declare the pull queue under the translated name in ``queue.yaml``.
"""

from __future__ import annotations

import hashlib

from .api import MAX_QUEUE_NAME, QUEUE_NAME_ILLEGAL_RE


def pull_queue_name(name: str) -> str:
    """The pull queue that holds the kombu queue ``name``.

    Raises:
        ValueError: for an empty name.
    """
    if not name:
        raise ValueError("a queue name must not be empty")
    translated = QUEUE_NAME_ILLEGAL_RE.sub("-", name)
    if len(translated) > MAX_QUEUE_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        translated = f"{translated[: MAX_QUEUE_NAME - 9]}-{digest}"
    return translated
