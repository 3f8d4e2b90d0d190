"""The dashboard's routes: the page at ``/``, its script and style, its data and its actions.

:class:`Dashboard` answers every request whose path is ``/`` or under
``/dashboard/``, for the REST front (:class:`~kombu_appengine.rest.front.RestApi`),
so the emulator and the gateway serve it from this one place, with the
front's own authentication and queue ACLs:

* ``GET /``: the page (static, no data in it); ``GET /dashboard/dashboard.js``
  and ``dashboard.css``: its script and style.
* ``GET /dashboard/api/queues``: every pull queue the caller may consume
  from, with its stats and its first :data:`TASKS_SHOWN` tasks (payload
  previews included). A server that asks for bearer tokens asks here too:
  the page then asks the person for one and sends it as ``Authorization``.
* ``POST /dashboard/api/delete`` (``{"project", "queue", "task"}``) and
  ``POST /dashboard/api/purge`` (``{"project", "queue"}``): only with an
  ``admin`` (the emulator); the gateway's dashboard refuses them (403).

The actions are safe against other sites' pages (CSRF): each must carry the
server's secret :data:`CSRF_HEADER`, which only the page served from the
server itself can read, and a browser's ``Sec-Fetch-Site``, when sent, must
say ``same-origin``, and its ``Origin`` the server's own. A form another
site posts carries none of that, and is refused with 403 before anything
is read or changed. Every answer forbids framing and inline scripts
(``Content-Security-Policy``), so nothing a payload holds can run.
"""

from __future__ import annotations

import hmac
import importlib.resources
import logging
import secrets
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..rest import errors
from ..rest.backend import PeekedTask, QueueAdmin
from ..rest.errors import ApiError
from ..rest.front import CONSUMER, Identity, Response, json_body, json_response, parse_query
from .preview import preview

if TYPE_CHECKING:
    from ..rest.front import RestApi

logger = logging.getLogger(__name__)

#: Where the page is.
PAGE_PATH = "/"
#: Where everything else of the dashboard is.
PREFIX = "/dashboard/"
#: The data the page polls.
DATA_PATH = PREFIX + "api/queues"
#: Delete one task.
DELETE_PATH = PREFIX + "api/delete"
#: Delete every task of a queue.
PURGE_PATH = PREFIX + "api/purge"
#: Tasks shown per queue, with payload previews (``tasks.list`` gives 100, without).
TASKS_SHOWN = 200
#: Most bytes of a payload read for its preview: a payload up to this size is
#: decoded whole (a kombu message's body, JSON), a longer one is shown cut.
PREVIEW_PAYLOAD_BYTES = 64 * 1024
#: The header carrying the server's secret on every action (lower case, as the front has headers).
CSRF_HEADER = "x-dashboard-token"
#: The project the data calls name when any project id names the same queues
#: and none is known (the backends then take any id).
ANY_PROJECT = "any"
#: The static files: path, file in ``static/``, content type.
_STATIC = {
    PREFIX + "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    PREFIX + "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_HTML_TYPE = "text/html; charset=utf-8"
#: Sent with every answer of the dashboard: no framing (clickjacking), no
#: inline script or style (a payload shown by mistake as HTML could not run),
#: no sniffing, no caching of payloads, no referrer.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _static(name: str) -> bytes:
    """A file of ``static/``, from the installed package."""
    return importlib.resources.files("kombu_appengine.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """The dashboard of one REST front.

    Parameters:
        front: the REST front: its backend, authentication and ACLs.
        admin: deletes tasks and purges queues (the emulator's model);
            ``None`` for a read-only dashboard (the gateway's).
    """

    def __init__(self, front: RestApi, admin: QueueAdmin | None = None) -> None:
        self.front = front
        self.admin = admin
        #: The secret the page sends with every action: only a page served
        #: by this server can read it (browsers keep other sites from reading it).
        self.csrf_token = secrets.token_urlsafe(32)

    @staticmethod
    def serves(target: str) -> bool:
        """Whether a request target is the dashboard's."""
        path = target.partition("?")[0]
        return path == PAGE_PATH or path.startswith(PREFIX)

    def answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, host: str
    ) -> Response:
        """Answer one request of the dashboard.

        ``headers`` has lower-case names; ``host`` is the server's address as
        the client named it.

        Raises:
            ApiError: what refuses the request (401, 403, 404, 405, 400).
        """
        path, _, query_string = target.partition("?")
        query = parse_query(query_string)
        if path in (DELETE_PATH, PURGE_PATH):
            _allow(method, path, "POST")
            document = self._act(path, headers, query, body, host)
            return _secured(json_response(200, document))
        _allow(method, path, "GET")
        if path == PAGE_PATH:
            return _secured(Response(200, self._page(), _HTML_TYPE))
        if path == DATA_PATH:
            return _secured(json_response(200, self.data(self.front.caller(headers, query))))
        if path in _STATIC:
            name, content_type = _STATIC[path]
            return _secured(Response(200, _static(name), content_type))
        raise errors.not_found(f"No page of the dashboard at {path[:200]}")

    def _page(self) -> bytes:
        page = _static("index.html").decode("utf-8")
        page = page.replace("{{csrf}}", self.csrf_token if self.admin is not None else "")
        page = page.replace("{{mode}}", "actions" if self.admin is not None else "read-only")
        return page.encode("utf-8")

    # -- the data ---------------------------------------------------------

    def data(self, identity: Identity | None) -> dict[str, Any]:
        """What the page shows: each project's pull queues that ``identity`` may consume from.

        Queues its ACL does not allow are left out, and counted in ``hidden``.
        """
        backend = self.front.backend
        names = backend.queue_names()
        allowed = [name for name in names if self._allowed(identity, name)]
        projects: list[str | None] = [*backend.projects()] or [None]
        groups = [
            {
                "project": project,
                "queues": [self._queue(project or ANY_PROJECT, name) for name in allowed],
            }
            for project in projects
        ]
        return {
            "actions": self.admin is not None,
            "now": backend.clock(),
            "tasksShown": TASKS_SHOWN,
            "projects": groups,
            "hidden": len(names) - len(allowed),
        }

    def _allowed(self, identity: Identity | None, queue: str) -> bool:
        try:
            # The ACLs are queue.yaml's: the same for every project.
            self.front.check_acl(identity, ANY_PROJECT, queue, CONSUMER)
        except ApiError:
            return False
        return True

    def _queue(self, project: str, name: str) -> dict[str, Any]:
        backend = self.front.backend
        resource = backend.get_queue(project, name, get_stats=True)
        stats = resource["stats"]
        tasks = backend.peek_tasks(project, name, TASKS_SHOWN, PREVIEW_PAYLOAD_BYTES)
        return {
            "name": name,
            "maxLeases": resource.get("maxLeases"),
            "totalTasks": int(stats["totalTasks"]),
            "leasedNow": backend.leased_count(project, name),
            "oldestTask": int(stats["oldestTask"]),
            "leasedLastMinute": int(stats["leasedLastMinute"]),
            "leasedLastHour": int(stats["leasedLastHour"]),
            "tasks": [_task(task) for task in tasks],
        }

    # -- the actions ------------------------------------------------------

    def _act(
        self, path: str, headers: Mapping[str, str], query: Mapping[str, list[str]], body: bytes, host: str
    ) -> dict[str, Any]:
        if self.admin is None:
            raise errors.forbidden("This dashboard is read-only: it deletes no task and purges no queue")
        self._check_request_source(headers, host)
        identity = self.front.caller(headers, query)
        document = json_body(body, headers, "an action object")
        if not isinstance(document, dict):
            raise errors.bad_request("The request body must be a JSON object")
        project, queue = _text(document, "project"), _text(document, "queue")
        self.front.check_acl(identity, project, queue, CONSUMER)
        if path == DELETE_PATH:
            task = _text(document, "task")
            self.front.backend.delete_task(project, queue, task)
            logger.info("dashboard: deleted task %s of queue %s of project %s", task, queue, project)
            return {"deleted": task}
        count = self.admin.purge_queue(project, queue)
        logger.info("dashboard: purged queue %s of project %s (%d tasks)", queue, project, count)
        return {"purged": count}

    def _check_request_source(self, headers: Mapping[str, str], host: str) -> None:
        """Refuse an action that a page of another site may have sent.

        Raises:
            ApiError: 403 without the server's secret, or from another site.
        """
        given = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8"), self.csrf_token.encode("utf-8")):
            raise errors.forbidden(
                f"An action of the dashboard must carry the header {CSRF_HEADER} of the page "
                "this server served: reload the dashboard"
            )
        site = headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise errors.forbidden(f"Actions come from the dashboard's own page only, not {site[:50]!r}")
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            raise errors.forbidden(f"Origin {origin[:100]!r} is not this server's own")


def _task(peeked: PeekedTask) -> dict[str, Any]:
    """A task as the page shows it: times in seconds, its payload previewed."""
    resource = peeked.resource
    lease = int(resource["leaseTimestamp"])
    return {
        "id": resource["id"],
        "tag": resource.get("tag"),
        "retryCount": resource["retry_count"],
        "enqueued": int(resource["enqueueTimestamp"]) / 1_000_000,
        "leaseExpires": lease / 1_000_000 if lease else None,
        "size": peeked.size,
        "preview": preview(peeked.payload, peeked.size).to_dict(),
    }


def _text(document: dict[str, Any], field: str) -> str:
    """A required string field of an action.

    Raises:
        ApiError: 400 naming the field when it is missing or not a non-empty string.
    """
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise errors.bad_request(f"The action needs {field!r}, a non-empty string", reason="required")
    return value


def _allow(method: str, path: str, *allowed: str) -> None:
    if method not in allowed:
        raise errors.method_not_allowed(method, urllib.parse.quote(path[:200]))


def _secured(response: Response) -> Response:
    return response._replace(headers=SECURITY_HEADERS)
