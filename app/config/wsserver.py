"""The `ws` role: daphne, configured from settings, that drains on SIGTERM.

Draining (realtime/daphne_server.py): stop accepting, mark /readyz 503, close every
WebSocket with 1012 in batches over CHAT_DRAIN_SPREAD, let each consumer run its
disconnect, then exit; at the latest after CHAT_DRAIN_TIMEOUT. A second signal exits
at once.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource

log = logging.getLogger("chat.ws")


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit: every WebSocket is a file descriptor,
    and a shell's (or a container runtime's) soft 1024 would cap a replica at about a
    thousand sockets, far below what it is sized for. Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        return soft, target
    return soft, soft


def tune_gc(threshold: tuple[int, ...] | None) -> int:
    """Freeze what start-up made and collect the young generation less often.

    Every join allocates a few hundred container objects; with Python's thresholds the
    collector runs every 700 of them, and each full collection walks everything Django,
    the app and every connection hold. Frozen objects are never walked again; the rest
    are collected in larger, rarer batches (docs/operations.md, "Join storms").
    """
    if threshold is None:
        return 0
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
    return gc.get_freeze_count()


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="entrypoint.py ws")
    parser.add_argument("--host", default=os.environ.get("BIND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    opts = parser.parse_args(args)

    files_before, files_after = raise_open_files_limit()
    files_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    import django

    django.setup()
    from django.conf import settings

    # Before anything that may import Twisted: daphne's server module installs the
    # asyncio reactor.
    from realtime.daphne_server import DrainingServer

    trust_proxy = settings.TRUST_PROXY_HEADERS
    from chat.protocol import MAX_FRAME_BYTES
    from config.asgi import application

    frozen = tune_gc(settings.CHAT_WS_GC_THRESHOLD)

    server = DrainingServer(
        application=application,
        endpoints=[f"tcp:port={opts.port}:interface={opts.host}"],
        signal_handlers=False,
        ping_interval=settings.WS_PING_INTERVAL,
        ping_timeout=settings.WS_PING_TIMEOUT,
        websocket_timeout=int(settings.WS_MAX_CONNECTION_AGE),
        websocket_connect_timeout=settings.WS_CONNECT_TIMEOUT,
        websocket_handshake_timeout=settings.WS_HANDSHAKE_TIMEOUT,
        application_close_timeout=settings.WS_APPLICATION_CLOSE_TIMEOUT,
        # An inbound frame the app would refuse is not buffered whole first: autobahn closes
        # with 1009. The message limit stays daphne's 1 MiB: autobahn applies it to what the
        # server sends as well, and a history page may be larger than one inbound frame.
        websocket_max_frame_size=MAX_FRAME_BYTES,
        proxy_forwarded_address_header="X-Forwarded-For" if trust_proxy else None,
        proxy_forwarded_port_header="X-Forwarded-Port" if trust_proxy else None,
        proxy_forwarded_proto_header="X-Forwarded-Proto" if trust_proxy else None,
        drain_timeout=settings.CHAT_DRAIN_TIMEOUT,
        drain_spread=settings.CHAT_DRAIN_SPREAD,
        server_name="",
        verbosity=0,
    )

    def started():
        log.info("ws listening on %s:%s", opts.host, opts.port)
        log.info(
            "open-files limit: soft %d (was %d), hard %s",
            files_after,
            files_before,
            "unlimited" if files_hard == resource.RLIM_INFINITY else files_hard,
        )
        log.info("gc: thresholds %s, %d objects from start-up frozen", gc.get_threshold(), frozen)

    server.serve(started)
    if server.listen_failed:
        log.critical("could not listen on %s:%s", opts.host, opts.port)
    else:
        log.info("ws stopped")
    # Skip the interpreter's exit-time joins: a worker thread stuck in a database call
    # would hold the process past the drain bound. Sockets close with the process.
    logging.shutdown()
    os._exit(1 if server.listen_failed else 0)
