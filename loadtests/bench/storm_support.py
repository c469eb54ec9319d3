"""What the storm (bench/storm.py) needs around the clients: a sender that survives the
replicas' restarts (the HTTP API), a WebSocket sender for the fan-out (the ceiling has no
HTTP API), nginx's sizing and connections, the kernel's accept-queue counters, and a
summary of what the servers logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import resource
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from chatclient import aio, protocol
from chatclient.protocol import Session
from websockets.asyncio.client import ClientConnection

# --- the sender: the HTTP API, so it survives every replica's restart ------------------------


class HttpSender:
    """Posts `b <phase> http <seq> <sent ns> xxx…` messages through nginx to the HTTP API
    at a steady rate, in a thread, and keeps the id of every stored message."""

    def __init__(self, base_url: str, room: str, token: str, size: int) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"/api/rooms/{room}/messages"
        self.headers = {**protocol.auth_headers(token), "Content-Type": "application/json"}
        self.filler = "x" * size
        self.conn: http.client.HTTPConnection | None = None
        self.seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: dict[str, Any] = {}

    def start(self, phase: str, rate: float, seconds: float = float("inf")) -> None:
        self._stop.clear()
        self.result = {"ids": [], "failures": Counter(), "late_ticks": 0}
        self._thread = threading.Thread(target=self._run, args=(phase, rate, seconds), daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop (or wait for the end of `seconds`); what was sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return {
            "sent": len(self.result["ids"]),
            "ids": self.result["ids"],
            "failures": dict(self.result["failures"]),
            "late_ticks": self.result["late_ticks"],
        }

    def wait(self) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join()
        return self.stop()

    def _run(self, phase: str, rate: float, seconds: float) -> None:
        started = due = time.monotonic()
        while time.monotonic() - started < seconds and not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if delay < -0.1:
                self.result["late_ticks"] += 1
            self._post(phase)
            due += 1.0 / rate

    def _post(self, phase: str) -> None:
        self.seq += 1
        text = f"b {phase} http {self.seq} {time.monotonic_ns()} {self.filler}"
        body = json.dumps({"message": text})
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.request("POST", self.path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.result["failures"][type(exc).__name__] += 1
            with contextlib.suppress(Exception):
                assert self.conn is not None
                self.conn.close()
            self.conn = None
            return
        if response.status == 201:
            self.result["ids"].append(json.loads(payload)["id"])
        else:
            self.result["failures"][f"HTTP {response.status}"] += 1


# --- the WebSocket sender: one more socket in the room, for the fan-out ---------------------


class WsSender:
    """Posts the same `b <phase> ws <seq> <sent ns> xxx…` messages as HttpSender, at the
    same steady rate, as `chat_message` frames over one WebSocket of its own (through
    nginx, like the members). The send time goes into the text just before the frame is
    written, as HttpSender's goes in just before the POST.

    The socket joins the room (an extra connection, not one of the N members: nobody
    counts its deliveries), so it gets every message back like the others; a message's
    id is learned from that echo (`echoed`). `sent` counts the frames written;
    `failures` the writes that failed and the error frames the server answered with.
    Everything runs on an event loop in a thread of its own, like HttpSender's thread;
    `open` before the phase (its join is no part of it), `close` after."""

    def __init__(self, url: str, token: str, size: int) -> None:
        self.url = url
        self.token = token
        self.filler = "x" * size
        self.seq = 0
        self.ws: ClientConnection | None = None
        self.joined: asyncio.Future | None = None
        self.reader: asyncio.Task | None = None
        self.sending: asyncio.Future | None = None
        self.echoes: dict[tuple[str, int], int] = {}  # (phase, seq) -> message id
        self.errors: Counter = Counter()
        self.result: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self, timeout: float = 60.0) -> None:
        """Connect and wait for the join's `user_list`."""
        self._call(self._open(timeout), timeout + 5)

    async def _open(self, limit: float) -> None:
        self.ws = await aio.open_socket(self.url, self.token, open_timeout=limit, **aio.LEAN)
        self.joined = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read(self.ws, _Echoes(self, self.joined)))
        await asyncio.wait_for(asyncio.shield(self.joined), limit)

    async def _read(self, ws: ClientConnection, echoes: _Echoes) -> None:
        await aio.pump(ws, echoes)
        if not echoes.joined_future.done():
            echoes.joined_future.set_exception(
                ConnectionError(f"closed {ws.close_code} before joining")
            )

    def echo(self, message: dict) -> None:
        """A room message: the id of one of this sender's own (`b <phase> ws <seq> …`)."""
        text = message.get("message")
        if isinstance(text, str) and text.startswith("b "):
            _, phase, sender, seq, _ = text.split(" ", 4)
            if sender == "ws" and isinstance(message.get("id"), int):
                self.echoes[phase, int(seq)] = message["id"]

    def start(self, phase: str, rate: float, seconds: float = float("inf")) -> None:
        self.result = {"phase": phase, "seqs": [], "failures": Counter(), "late_ticks": 0}
        self.errors.clear()
        self.sending = asyncio.run_coroutine_threadsafe(self._run(phase, rate, seconds), self.loop)

    def wait(self) -> dict[str, Any]:
        """Until the last frame of the phase is written: what was sent (ids so far)."""
        assert self.sending is not None
        self.sending.result()
        return self._summary()

    def echoed(self, timeout: float = 10.0) -> dict[str, Any]:
        """What was sent, once every frame's echo is back (or `timeout` passed)."""
        phase, seqs = self.result["phase"], self.result["seqs"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any((phase, q) not in self.echoes for q in seqs):
            time.sleep(0.1)
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        phase, seqs = self.result["phase"], self.result["seqs"]
        ids = [self.echoes[phase, q] for q in seqs if (phase, q) in self.echoes]
        failures = self.result["failures"] + self.errors
        return {
            "sent": len(seqs),
            "ids": ids,
            "unechoed": len(seqs) - len(ids),
            "failures": dict(failures),
            "late_ticks": self.result["late_ticks"],
        }

    async def _run(self, phase: str, rate: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        started = due = loop.time()
        while loop.time() - started < seconds:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                self.result["late_ticks"] += 1
            await self._post(phase)
            due += 1.0 / rate

    async def _post(self, phase: str) -> None:
        self.seq += 1
        text = f"b {phase} ws {self.seq} {time.monotonic_ns()} {self.filler}"
        if self.ws is None:
            self.result["failures"]["not open"] += 1
            return
        if await aio.send(self.ws, protocol.chat_message(text)):
            self.result["seqs"].append(self.seq)
        else:
            self.result["failures"]["ConnectionClosed"] += 1

    def close(self) -> None:
        async def bye() -> None:
            if self.ws is not None:
                await self.ws.close()
            if self.reader is not None:
                await asyncio.gather(self.reader, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(bye(), 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class _Echoes(Session):
    """WsSender's socket: its join, its own messages' echoes, the error frames."""

    __slots__ = ("joined_future", "sender")

    def __init__(self, sender: WsSender, joined_future: asyncio.Future) -> None:
        super().__init__()
        self.sender = sender
        self.joined_future = joined_future

    def on_message(self, message: dict, now: Any, live: bool) -> None:
        if live:
            self.sender.echo(message)

    def on_joined(self, now: Any) -> None:
        if not self.joined_future.done():
            self.joined_future.set_result(None)

    def on_error(self, frame: dict, now: Any) -> None:
        self.sender.errors[f"error {frame.get('code')}"] += 1


# --- nginx and the kernel ------------------------------------------------------------------


def nginx_budget(clients: int) -> int:
    """WebSockets to size nginx for: one per client plus headroom, but never more than one
    worker's descriptors can hold (worker_rlimit_nofile = 2 × budget + 2048): without
    CAP_SYS_RESOURCE nginx cannot go past the hard limit (it only logs an alert), and
    beyond it the sockets rely on being spread over nginx's two workers."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = clients + 100
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(64, min(wanted, (hard - 2048) // 2))


def tcp_counters() -> dict[str, int]:
    """The kernel's counters of full listen queues (a SYN dropped, retried by the client a
    second later): how often a server's accept backlog overflowed, machine-wide."""
    keep = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                found = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                return {k: int(found[k]) for k in keep if k in found}
    return {}


def nginx_workers(pid: int) -> list[int]:
    """Open TCP connections of each nginx worker (a proxied socket is two)."""
    out = []
    with contextlib.suppress(psutil.Error):
        for worker in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                out.append(
                    sum(1 for c in worker.net_connections("tcp") if c.status == "ESTABLISHED")
                )
    return out


# --- logs ----------------------------------------------------------------------------------


def log_summary(stack: Any, keep: Path) -> dict[str, Any]:
    """What nginx answered to WebSocket handshakes (status counts from its access log, a
    socket is logged when it ends) and the warnings the servers logged, most frequent
    first. The logs are copied to `keep` (the stack's folder goes when it stops)."""
    logs = stack.logs()
    keep.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        shutil.copyfile(path, keep / f"{name}.log")
    statuses: Counter = Counter()
    access = logs.get("nginx-access")
    if access:
        for line in access.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if str(entry.get("uri", "")).startswith("/ws/"):
                    statuses[str(entry.get("status"))] += 1
    warnings: Counter = Counter()
    for name, path in logs.items():
        if name.startswith("ws-") or name in ("web", "nginx"):
            for line in path.read_text(errors="replace").splitlines():
                key = _warning(name, line)
                if key:
                    warnings[key] += 1
    return {"ws_statuses": dict(statuses), "warnings": dict(warnings.most_common(15))}


def _warning(name: str, line: str) -> str | None:
    """`name: message` of a WARNING or worse line (JSON from the app, text from nginx)."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            level = str(entry.get("level", "")).upper()
            if level in ("WARNING", "ERROR", "CRITICAL"):
                message = str(entry.get("message", ""))[:90]
                return f"{name.split('-')[0]}: {level} {message}"
        return None
    for level in ("[warn]", "[error]", "[crit]", "[alert]"):
        if level in line:
            message = line.split(level, 1)[1].split(", client:")[0]
            message = re.sub(r"^[^*]*\*\d+ ", "", message)  # pid#tid: *connection
            return f"{name}: {level} {message[:90]}"
    return None
