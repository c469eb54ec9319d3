"""nginx's first line of per-address limits (nginx/render.sh NGINX_WS_*, NGINX_AUTH_*), on
the system nginx with a stand-in upstream: past each limit the answer is 429, before the
app is asked. The app's own, precise limits are tested in tests/core/test_abuse.py."""

from __future__ import annotations

import http.client
import socket
import threading
from pathlib import Path

import pytest

from localstack.servers import Nginx, free_port, wait_until

pytestmark = pytest.mark.stack

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


class SilentUpstream:
    """Accepts connections and never answers: a proxied request stays open."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def nginx_with(tmp_path: Path):
    started: list[tuple[Nginx, SilentUpstream]] = []

    def start(**limits: str) -> tuple[int, SilentUpstream]:
        upstream = SilentUpstream()
        port = free_port()
        address = f"127.0.0.1:{upstream.port}"
        static = tmp_path / "static"
        static.mkdir(exist_ok=True)
        nginx = Nginx(
            tmp_path / f"n{len(started)}",
            port,
            web=[address],
            ws=[address],
            static_root=static,
            extra={"NGINX_WS_READ_TIMEOUT": "30s", **limits},
        )
        started.append((nginx.start(), upstream))
        return port, upstream

    yield start
    for nginx, upstream in started:
        nginx.stop()
        upstream.close()


def status(port: int, method: str, path: str, headers: dict | None = None, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        return conn.getresponse().status
    except TimeoutError:
        return "held"  # passed to the upstream, which holds it
    finally:
        conn.close()


def test_login_and_signup_posts_past_the_rate_get_429_before_the_app(nginx_with):
    port, _ = nginx_with(NGINX_AUTH_RATE="1r/m", NGINX_AUTH_BURST="2")
    answers = [status(port, "POST", "/accounts/login/", timeout=0.5) for _ in range(5)]
    assert answers == ["held", "held", "held", 429, 429]
    assert status(port, "POST", "/accounts/signup/") == 429  # one budget per address
    assert status(port, "POST", "/admin/login/") == 429
    # Showing the form is not counted.
    assert status(port, "GET", "/accounts/login/", timeout=0.5) == "held"


def test_websocket_handshakes_past_the_rate_get_429(nginx_with):
    port, _ = nginx_with(NGINX_WS_RATE="1r/m", NGINX_WS_BURST="1")
    answers = [status(port, "GET", "/ws/chat/lobby/", UPGRADE, timeout=0.5) for _ in range(4)]
    assert answers == ["held", "held", 429, 429]


def test_open_websockets_per_address_are_capped(nginx_with):
    port, upstream = nginx_with(NGINX_WS_CONN_PER_ADDRESS="3")
    held = []
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/ws/chat/lobby/", headers=UPGRADE)
        held.append(conn)
    try:
        # nginx holds all three (each passed on to the upstream) before the fourth comes.
        wait_until(lambda: len(upstream.held) == 3, 10, "three proxied handshakes")
        assert status(port, "GET", "/ws/chat/lobby/", UPGRADE, timeout=3) == 429
    finally:
        for conn in held:
            conn.close()


def test_limits_are_off_unless_set(nginx_with):
    port, _ = nginx_with()
    answers = [status(port, "POST", "/accounts/login/", timeout=0.3) for _ in range(12)]
    assert answers == ["held"] * 12
