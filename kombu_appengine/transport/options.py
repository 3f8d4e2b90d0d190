"""The transport options: their names, checks and defaults, in one place.

:class:`Settings` is what a :class:`~kombu_appengine.transport.Transport`
makes of ``transport_options``; every option is documented in the package's
manual (:mod:`kombu_appengine.transport`).
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .. import api
from ..api import GOOGLE_ROOT_URL
from ..client import root_url_of
from ..errors import ConfigurationError, UnknownTransportOptionWarning
from ..names import pull_queue_name

#: Project id used with an emulator when ``project_name`` is not given.
EMULATOR_PROJECT = "emulator"
#: The message formats ``message_format`` takes.
MESSAGE_FORMATS = ("kombu", "raw")
#: The transport options that choose the credentials (see :mod:`kombu_appengine.credentials`).
CREDENTIALS_OPTIONS = ("credentials", "credentials_storage", "credentials_file")
#: Options kombu itself puts in, or reads from, the transport options of
#: every transport: ``Connection``'s reconnection settings, the retry policy
#: that ``Producer.publish(retry=True)`` copies in (Celery publishes so), and
#: the virtual channel's ``body_encoding`` and ``deadletter_queue``. Never
#: warned about, and never read as this transport's own: that is why the
#: retries of a request are ``request_retries``, not kombu's ``max_retries``
#: (which a publish with a retry policy overwrites, with ``None`` for ever).
KOMBU_OPTIONS = frozenset(
    {
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "connect_retries_timeout",
        "errback",
        "callback",
        "on_revive",
        "retry_errors",
        "body_encoding",
        "deadletter_queue",
        "polling_interval",
    }
)
#: Options of kombu's other cloud transports (where they come from) and the
#: option of this one that does their job, for users who bring their settings along.
OTHER_TRANSPORTS_OPTIONS = {
    "visibility_timeout": ("SQS and Redis", "lease_secs"),
    "ack_deadline_seconds": ("Pub/Sub", "lease_secs"),
    "bulk_max_messages": ("Pub/Sub", "num_tasks"),
    "wait_time_seconds": ("SQS and Pub/Sub", "polling_interval"),
    "retry_timeout_seconds": ("Pub/Sub", "request_retries"),
    "project_id": ("Pub/Sub", "project_name"),
    "region": ("SQS", "project_name"),
    "predefined_queues": ("SQS", "shared_queue"),
}
#: Longest ``ack_flush_interval``, in seconds: acknowledged tasks wait no
#: longer than this to be deleted.
MAX_FLUSH_INTERVAL = 60.0
#: Metadata key of a :class:`Settings` field made from transport options not
#: named like the field itself; a field without it is the option of its name.
_FROM_OPTIONS = "from_options"


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return api.parse_bool(value)
        except ValueError:
            pass
    raise ConfigurationError(f"transport option {name} must be true or false, not {value!r}")


def _as_number(name: str, value: Any, kind: type, low: float, high: float) -> Any:
    """``value`` as a ``kind`` within ``low``..``high``; text is read, nothing is rounded.

    Raises:
        ConfigurationError: naming the option, for anything else (a bool,
            ``inf`` or ``nan``, a fraction where a whole number is wanted).
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    whole = kind is not int or (number is not None and math.isfinite(number) and number.is_integer())
    if number is None or isinstance(value, bool) or not whole or not low <= number <= high:
        what = "a whole number" if kind is int else "a number"
        raise ConfigurationError(
            f"transport option {name} must be {what} from {low:g} to {high:g}, not {value!r}"
        )
    return kind(number)


def _warn_unknown(options: Iterable[Any], known: frozenset[str]) -> None:
    names = set(options)
    odd = [name for name in names if not isinstance(name, str)]
    if odd:
        raise ConfigurationError(f"transport option names must be strings, not {odd[0]!r}")
    for name in sorted(names - known - KOMBU_OPTIONS):
        if name in OTHER_TRANSPORTS_OPTIONS:
            origin, nearest = OTHER_TRANSPORTS_OPTIONS[name]
            hint = f"an option of kombu's {origin} transports; the nearest here is {nearest!r}"
        else:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the options are {', '.join(sorted(known))}"
        warnings.warn(
            f"kombu_appengine ignores the unknown transport option {name!r}: {hint}",
            UnknownTransportOptionWarning,
            # The user's code is an unknown number of kombu (or Celery) frames
            # up; the message names the option instead of a line.
            stacklevel=1,
        )


def _root_url(endpoint: Any) -> str | None:
    """The root URL ``api_endpoint`` names, else ``TASKQUEUE_EMULATOR_HOST``; ``None``: Google's.

    Both are read alike (:func:`~kombu_appengine.client.root_url_of`).

    Raises:
        ConfigurationError: naming the option or the environment variable,
            and the value it has.
    """
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.strip()):
        raise ConfigurationError(f"transport option api_endpoint must be a URL, not {endpoint!r}")
    source = "transport option api_endpoint"
    if not endpoint:
        endpoint = os.environ.get(api.EMULATOR_HOST_ENV, "").strip()
        source = f"environment variable {api.EMULATOR_HOST_ENV}"
    if not endpoint:
        return None
    try:
        return root_url_of(endpoint)
    except ValueError as error:
        raise ConfigurationError(f"{source}: {error}") from None


@dataclass(frozen=True)
class Settings:
    """The transport options, checked, with their defaults."""

    project: str = field(metadata={_FROM_OPTIONS: ("project_name", "hrd_project")})
    root_url: str = field(metadata={_FROM_OPTIONS: ("api_endpoint",)})
    #: Whether root_url is an emulator (or another server that is not Google's).
    emulated: bool = field(metadata={_FROM_OPTIONS: ()})
    num_tasks: int = 10
    lease_secs: int = 60
    shared_queue: str | None = None
    message_format: str = "kombu"
    request_retries: int = 5
    polling_interval: float = 1.0
    ack_batch_size: int = 100
    ack_flush_interval: float = 0.2

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every transport option this transport reads: its settings' and the credentials'."""
        own = {name for f in fields(cls) for name in f.metadata.get(_FROM_OPTIONS, (f.name,))}
        return frozenset(own.union(CREDENTIALS_OPTIONS))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Check ``transport_options``.

        An option this transport does not know is ignored, with an
        :class:`~kombu_appengine.errors.UnknownTransportOptionWarning` naming
        the nearest known one; those kombu reads itself (:data:`KOMBU_OPTIONS`)
        are not warned about.

        Raises:
            ConfigurationError: naming the option that is missing or wrong.
        """
        _warn_unknown(options, cls.option_names())
        root_url = _root_url(options.get("api_endpoint"))
        emulated = root_url is not None
        project = options.get("project_name")
        if project is None:
            if not emulated:
                raise ConfigurationError(
                    "transport option project_name is required: the App Engine application id "
                    "(or set api_endpoint or TASKQUEUE_EMULATOR_HOST to use an emulator)"
                )
            project = EMULATOR_PROJECT
        if not isinstance(project, str) or not project:
            raise ConfigurationError(
                f"transport option project_name must be a non-empty string, not {project!r}"
            )
        if (
            _as_bool("hrd_project", options.get("hrd_project", False))
            and api.bare_project(project) == project
        ):
            project = "s~" + project
        message_format = options.get("message_format", "kombu")
        if message_format not in MESSAGE_FORMATS:
            raise ConfigurationError(
                f"transport option message_format must be 'kombu' or 'raw', not {message_format!r}"
            )
        for name in CREDENTIALS_OPTIONS[2:]:
            path = options.get(name)
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise ConfigurationError(f"transport option {name} must be a path, not {path!r}")
        shared = options.get("shared_queue")
        if shared is not None and (not isinstance(shared, str) or not shared):
            raise ConfigurationError(f"transport option shared_queue must be a queue name, not {shared!r}")
        return cls(
            project=project,
            root_url=root_url or GOOGLE_ROOT_URL,
            emulated=emulated,
            num_tasks=_as_number(
                "num_tasks", options.get("num_tasks", cls.num_tasks), int, 1, api.MAX_NUM_TASKS
            ),
            lease_secs=_as_number(
                "lease_secs", options.get("lease_secs", cls.lease_secs), int, 1, api.MAX_LEASE_SECONDS
            ),
            shared_queue=pull_queue_name(shared) if shared else None,
            message_format=message_format,
            request_retries=_as_number(
                "request_retries", options.get("request_retries", cls.request_retries), int, 0, 100
            ),
            polling_interval=_as_number(
                "polling_interval", options.get("polling_interval", cls.polling_interval), float, 0, 3600
            ),
            ack_batch_size=_as_number(
                "ack_batch_size",
                options.get("ack_batch_size", cls.ack_batch_size),
                int,
                1,
                api.MAX_BATCH_PARTS,
            ),
            ack_flush_interval=_as_number(
                "ack_flush_interval",
                options.get("ack_flush_interval", cls.ack_flush_interval),
                float,
                0,
                MAX_FLUSH_INTERVAL,
            ),
        )
