"""The dashboard: a page at ``/`` of the emulator and the gateway showing the pull queues.

It lists each pull queue with its stats (tasks, leased now, the longest
wait of an available task, leased in the last minute and hour, ``maxLeases``) and its first tasks
(tag, retry count, lease, a preview of the payload: kombu's envelope opened,
JSON laid out, binary in hex), and refreshes itself. On the emulator it
deletes tasks and purges queues; on the gateway it is read-only, and behind
the gateway's bearer tokens and queue ACLs.

Plain HTML, CSS and JavaScript in ``static/`` (no build step, nothing
fetched from elsewhere); :mod:`.app` serves them and the data, for the REST
front (:mod:`kombu_appengine.rest.front`); :mod:`.preview` renders payloads.
"""

from __future__ import annotations

from .app import Dashboard
from .preview import Preview, preview

__all__ = ["Dashboard", "Preview", "preview"]
