"""The discovery document of the Task Queue REST API, ``taskqueue:v1beta2``.

google-api-python-client builds its service objects from a discovery
document. Google no longer serves the one for this API, and no release of the
client ships it, so this package carries its own copy
(``taskqueue_v1beta2.json``), written from the API's public documentation.

:func:`load_document` returns it as a dictionary, optionally pointed at
another server (an emulator, say) by replacing its root URL::

    from googleapiclient.discovery import build_from_document
    service = build_from_document(load_document("http://127.0.0.1:8080/"), http=http)

The client derives both the request URLs (``rootUrl`` + ``servicePath``) and
the batch URL (``rootUrl`` + ``batchPath``) from the document's ``rootUrl``,
so changing it here moves both; ``client_options.api_endpoint`` would move
only the former.
"""

from __future__ import annotations

import copy
import functools
import json
import urllib.parse
from importlib.resources import files
from typing import Any

from .api import DISCOVERY_PATH

__all__ = ["DISCOVERY_PATH", "document_json", "load_document"]

_RESOURCE_NAME = "taskqueue_v1beta2.json"


@functools.cache
def _original() -> dict[str, Any]:
    """Parse the shipped document once; callers must never mutate the result."""
    text = files("kombu_appengine").joinpath(_RESOURCE_NAME).read_text(encoding="utf-8")
    return json.loads(text)


def load_document(root_url: str | None = None) -> dict[str, Any]:
    """Return the discovery document, optionally rooted at another server.

    Parameters
    ----------
    root_url:
        The root URL of the server to talk to, such as
        ``"http://127.0.0.1:8080/"``; a missing trailing slash is added. It
        replaces ``rootUrl``, and ``baseUrl`` and ``basePath`` follow it. The
        default keeps Google's ``https://www.googleapis.com/``.

    Raises
    ------
    ValueError
        If ``root_url`` is not an absolute ``http`` or ``https`` URL, or
        carries a query or fragment.

    Returns
    -------
    dict
        A fresh deep copy each call: changing it affects no other caller.
    """
    document = copy.deepcopy(_original())
    if root_url is None:
        return document
    parts = urllib.parse.urlsplit(root_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"root_url must be an absolute http(s) URL without query or fragment, got {root_url!r}"
        )
    if not root_url.endswith("/"):
        root_url += "/"
    base_url = root_url + document["servicePath"]
    document["rootUrl"] = root_url
    document["baseUrl"] = base_url
    document["basePath"] = urllib.parse.urlsplit(base_url).path
    return document


def document_json(root_url: str | None = None) -> str:
    """Return :func:`load_document`'s document serialized as JSON text.

    Parameters
    ----------
    root_url:
        As for :func:`load_document`.

    Raises
    ------
    ValueError
        As for :func:`load_document`.

    Returns
    -------
    str
        The document as a JSON object, ready to serve at :data:`DISCOVERY_PATH`
        or to pass to ``googleapiclient.discovery.build_from_document``.
    """
    return json.dumps(load_document(root_url), indent=1)
