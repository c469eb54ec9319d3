"""The `ws` role: daphne, configured from the environment, that drains on SIGTERM.

Draining: stop accepting, mark /readyz 503, close every WebSocket with 1012 (service
restart) so clients reconnect elsewhere and `resume`, let each consumer run its
disconnect (presence leave), then exit; at the latest after CHAT_DRAIN_TIMEOUT.
A second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from daphne.server import Server  # first: installs the asyncio Twisted reactor
from twisted.internet import reactor

log = logging.getLogger("chat.ws")

SERVICE_RESTART = 1012


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class DrainingServer(Server):
    def __init__(self, *args, drain_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.drain_timeout = drain_timeout
        self.ports: list = []
        self.drain_started: float | None = None

    def listen_success(self, port):
        super().listen_success(port)
        self.ports.append(port)

    def _open_websockets(self) -> list:
        from daphne.ws_protocol import WebSocketProtocol

        return [p for p in self.connections if isinstance(p, WebSocketProtocol)]

    def _apps_running(self) -> int:
        return sum(
            1
            for details in self.connections.values()
            if details.get("application_instance") is not None
            and not details["application_instance"].done()
        )

    def drain(self) -> None:
        from chat import health

        if self.drain_started is not None:
            log.warning("second signal: stopping now")
            self.stop()
            return
        self.drain_started = time.monotonic()
        health.draining = True
        sockets = self._open_websockets()
        log.warning("draining: closing %d WebSockets with %d", len(sockets), SERVICE_RESTART)
        for port in self.ports:
            port.stopListening()
        for protocol in sockets:
            if protocol.state == protocol.STATE_OPEN:
                protocol.serverClose(code=SERVICE_RESTART)
        self._wait_drained()

    def _wait_drained(self) -> None:
        elapsed = time.monotonic() - self.drain_started
        running = self._apps_running()
        if running == 0 or elapsed >= self.drain_timeout:
            if running:
                log.warning("drain timeout: %d connections still open; stopping", running)
            else:
                log.info("drained in %.2f s", elapsed)
            self.stop()
            return
        reactor.callLater(0.05, self._wait_drained)


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="entrypoint.py ws")
    parser.add_argument("--host", default=os.environ.get("BIND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    opts = parser.parse_args(args)

    import django

    django.setup()
    from django.conf import settings

    from config.asgi import application

    trust_proxy = os.environ.get("TRUST_PROXY_HEADERS", "").lower() in ("1", "true", "yes", "on")
    server = DrainingServer(
        application=application,
        endpoints=[f"tcp:port={opts.port}:interface={opts.host}"],
        signal_handlers=False,
        ping_interval=_env_float("WS_PING_INTERVAL", 20),
        ping_timeout=_env_float("WS_PING_TIMEOUT", 30),
        websocket_timeout=int(_env_float("WS_MAX_CONNECTION_AGE", 86400)),
        websocket_connect_timeout=_env_float("WS_CONNECT_TIMEOUT", 20),
        websocket_handshake_timeout=_env_float("WS_HANDSHAKE_TIMEOUT", 5),
        application_close_timeout=_env_float("WS_APPLICATION_CLOSE_TIMEOUT", 10),
        proxy_forwarded_address_header="X-Forwarded-For" if trust_proxy else None,
        proxy_forwarded_port_header="X-Forwarded-Port" if trust_proxy else None,
        proxy_forwarded_proto_header="X-Forwarded-Proto" if trust_proxy else None,
        drain_timeout=settings.CHAT_DRAIN_TIMEOUT,
        server_name="",
        verbosity=0,
    )

    def on_signal(signum, frame):
        reactor.callFromThread(server.drain)

    def install_handlers():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("ws listening on %s:%s", opts.host, opts.port)

    reactor.callWhenRunning(install_handlers)
    server.run()
    sys.exit(0)
