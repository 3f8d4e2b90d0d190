#!/usr/bin/env python3
"""A small loopback TCP proxy that delays every byte by half a round trip each way.

    scripts/delay_proxy.py --rtt-ms 20 --forward 127.0.0.1:0=127.0.0.1:6379

Each ``--forward LISTEN=TARGET`` listens on ``LISTEN`` (``host:port``, port 0
picks a free one; ``[::1]:port`` for IPv6) and relays every connection to
``TARGET``. Data is passed on in order, ``rtt / 2`` after it arrived, in
both directions, without limiting throughput: a request and its answer take
one round trip more, as on a network with that latency. Once every listener
is up it prints one line per forward, ``LISTEN_HOST:LISTEN_PORT -> TARGET``,
then ``ready``, and serves until it is killed.

``scripts/bench_transport.py`` puts one in front of every server it
measures (the emulator, moto_server, redis-server), so all pay the same
round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

#: Bytes read from a socket at once.
CHUNK = 65536


def address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair."""
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, not {text!r}")
    return host.strip("[]"), int(port)


def forward_pair(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    listen, separator, target = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected LISTEN=TARGET, not {text!r}")
    return address(listen), address(target)


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            chunks.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await delivering
    except (ConnectionError, OSError):
        delivering.cancel()
        writer.close()


async def serve(forwards: list[tuple[tuple[str, int], tuple[str, int]]], delay: float) -> None:
    servers = []
    for (listen_host, listen_port), (target_host, target_port) in forwards:

        async def connected(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            target: tuple[str, int] = (target_host, target_port),
        ) -> None:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(
                relay(reader, upstream_writer, delay),
                relay(upstream_reader, writer, delay),
                return_exceptions=True,
            )

        server = await asyncio.start_server(connected, listen_host, listen_port)
        host, port = server.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"{shown}:{port} -> {target_host}:{target_port}", flush=True)
        servers.append(server)
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added, in milliseconds")
    parser.add_argument(
        "--forward",
        type=forward_pair,
        action="append",
        required=True,
        metavar="LISTEN=TARGET",
        help="listen on LISTEN (host:port) and relay to TARGET; repeatable",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.forward, args.rtt_ms / 2000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
