"""``pullqueue_gateway scaffold DIR``: a directory ready for ``gcloud app deploy``.

It holds ``app.yaml`` (a current Python 3 runtime with the bundled services,
``app_engine_apis: true``), ``main.py`` (the gateway's WSGI application),
``requirements.txt`` (this project, pinned, with its ``gateway`` extra, and
gunicorn) and an example ``queue.yaml`` with an ``acl``.
"""

from __future__ import annotations

import pathlib
import re

from .. import __version__

#: The Python runtime of the scaffolded service.
RUNTIME = "python312"


#: An App Engine service name: lowercase letters, digits and hyphens, starting
#: with a letter, at most 63 characters (and not ending with a hyphen).
SERVICE_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


class ScaffoldError(Exception):
    """The directory cannot be written (it exists and is not empty, say)."""


def check_service_name(name: str) -> str:
    """``name`` when App Engine takes it as a service's name.

    Raises:
        ValueError: saying what a service name may hold.
    """
    if not SERVICE_NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not an App Engine service name: lowercase letters, digits and hyphens, "
            "starting with a letter, not ending with a hyphen, at most 63 characters"
        )
    return name


APP_YAML = """\
# The Task Queue REST API gateway: a service of your App Engine app.
runtime: {runtime}
service: {service}
# The bundled task queue service (google.appengine.api.taskqueue).
app_engine_apis: true
entrypoint: gunicorn --bind :$PORT --workers 1 --threads 8 main:app
env_variables:
  # Accounts (service accounts, say) allowed on every queue, comma-separated;
  # others need a user_email entry in the queue's acl (queue.yaml).
  GATEWAY_ALLOWED_SERVICE_ACCOUNTS: ""
"""

MAIN_PY = '''\
"""The Task Queue REST API gateway (kombu-appengine-pullqueue), as App Engine serves it."""

from kombu_appengine.gateway import make_app

# Reads queue.yaml (deployed beside this file) for its writer_email entries.
app = make_app("queue.yaml")
'''

REQUIREMENTS_TXT = """\
# kombu-appengine-pullqueue is not on PyPI: build its wheel into ./wheels
# (python -m build --wheel --outdir wheels, from a checkout) before deploying.
--find-links ./wheels
kombu-appengine-pullqueue[gateway]=={version}
gunicorn>=22
"""

QUEUE_YAML = """\
# Deploy with: gcloud app deploy queue.yaml
queue:
- name: pull-queue
  mode: pull
  acl:
  - user_email: worker@example.com    # may lease, renew, delete, get and list
  - writer_email: app@example.com     # may insert
  retry_parameters:
    task_retry_limit: 7               # becomes maxLeases
"""


def scaffold(directory: str, service: str = "pullqueue-gateway") -> list[pathlib.Path]:
    """Write the deployment files into ``directory`` (created if needed); the paths written.

    Raises:
        ScaffoldError: ``directory`` exists and is not an empty directory, or
            cannot be written.
        ValueError: ``service`` is not a service name (:func:`check_service_name`).
    """
    check_service_name(service)
    root = pathlib.Path(directory)
    try:
        return _write(root, service)
    except OSError as error:
        raise ScaffoldError(f"cannot write {directory}: {error.strerror or error}") from None


def _write(root: pathlib.Path, service: str) -> list[pathlib.Path]:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root} exists and is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    (root / "wheels").mkdir()
    files = {
        "app.yaml": APP_YAML.format(runtime=RUNTIME, service=service),
        "main.py": MAIN_PY,
        "requirements.txt": REQUIREMENTS_TXT.format(version=__version__),
        "queue.yaml": QUEUE_YAML,
    }
    written = []
    for name, text in files.items():
        path = root / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
