"""The two servers of the REST API the suites run against: the emulator, and
the gateway on App Engine's task queue stub. Both have the same interface
(``url``, ``host``, ``service``, ``declare_queue``, ``inject_failures``,
``requests``, ``tokens``).

Every test that depends on the ``server_kind`` fixture (through a
directory's ``emulator`` fixture or ``make_server``) runs against both
(:func:`parametrize_servers`, called by the root conftest), unless it is
marked ``emulator_only`` with the reason why the gateway cannot serve it."""

from __future__ import annotations

from typing import Any

from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer

#: The kinds of server, as fixture parameters.
SERVER_KINDS = ("emulator", "gateway")


def start_server(kind: str, **options: Any) -> RestServer:
    """A server of ``kind`` with ``options`` (the emulator's, where the gateway has them), started."""
    if kind == "gateway":
        from kombu_appengine.gateway.local import LocalGateway

        return LocalGateway(**options).start()
    return Emulator(**options).start()


def parametrize_servers(metafunc: Any) -> None:
    """Run a test that takes the ``server_kind`` fixture against both servers;
    one marked ``emulator_only`` gets no gateway variant at all (not a skip,
    which would count for nothing)."""
    if "server_kind" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("emulator_only")
    if only is not None and not only.args:
        raise TypeError(f"{metafunc.definition.nodeid}: emulator_only needs the reason as its argument")
    metafunc.parametrize("server_kind", ("emulator",) if only is not None else SERVER_KINDS)
