"""The storm's clients: thousands of token WebSockets per process that behave like browsers.

Each member of the room is a `Member`: a chatclient Session (the protocol's state and
reconnect rules) with slots and a bitmap of the message ids it has, and one task that
keeps it connected, as room.js does:

- at most `inflight` handshakes per process are under way (TCP, HTTP upgrade, and the
  greeting up to the `user_list` frame that ends a join);
- a refused handshake (HTTP 503 when every replica is at its admission limit: nginx
  tries each before giving up) is retried after its `Retry-After` seconds plus up to 1 s,
  as is an `overloaded` error frame before close 1013 (a server without the denial
  response); a 1012 close (a draining replica) after its `retry_after_ms=N` hint plus up
  to 0.25 s; anything else after 0.25–1 s (BACKOFF);
- after a reconnect it sends `{"type":"resume","after":<last id>}` as soon as the socket
  opens, pages on while the reply has `has_more`, and is back when the last page
  arrives: the time from its first close to then is one "away" episode.

Room messages carry `b <phase> <sender> <seq> <sent ns> …` like bench/client.py's: their
latency is arrival minus the time in the text. Presence frames (`user_join`,
`user_leave`, the batched `presence`) are counted per member.

The coordinator (bench/storm.py) drives one StormAgent per process through bench/client.py's
Pool: `start`, `set_phase`, `status`, `counters`, `joins`, `phase_report`, `final_report`,
`close_all`.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from collections import Counter
from typing import Any

from chatclient import aio
from chatclient.protocol import Backoff, Session
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from bench.client import cpu_seconds

PRESENCE = frozenset({"user_join", "user_leave", "presence"})
JOIN_TIMEOUT = 60.0  # seconds from the TCP connect to the `user_list` before giving up
# After a close or a failed handshake 0.25–1 s, whatever the attempt; after a drain its
# hint plus up to 0.25 s; after a refusal (503's Retry-After, or an `overloaded` frame's
# retry_after) that plus up to 1 s.
BACKOFF = Backoff(base=0.75, cap=0.75, floor=0.25, hint_jitter=0.25, retry_jitter=1.0)


class Member(Session):
    """One client of the room: what it needs to reconnect and what it received."""

    __slots__ = (
        "agent",
        "away_code",
        "away_ns",
        "give_up",
        "got",
        "holding",
        "presence",
        "reconnects",
        "started",
        "token",
        "ws",
    )

    def __init__(self, agent: StormAgent, token: str) -> None:
        super().__init__(BACKOFF, come_back=None)  # back after any close, as a browser
        self.agent = agent
        self.token = token
        self.ws: ClientConnection | None = None
        self.got = bytearray()  # got[id] == 1: message id seen (live or in a history frame)
        self.presence = 0
        self.reconnects = 0
        self.away_ns = 0  # first close not yet resumed from (0: none)
        self.away_code = 0
        self.started = 0  # ns this connection's handshake began
        self.holding = False  # one of the agent's handshake slots (`inflight`)
        self.give_up: asyncio.TimerHandle | None = None  # aborts a join that hangs

    def saw(self, message_id: int) -> None:
        if message_id >= len(self.got):
            self.got.extend(bytes(message_id + 64 - len(self.got)))
        self.got[message_id] = 1

    # --- Session hooks -----------------------------------------------------------------

    def on_frame(self, frame: dict, now: int) -> None:
        self.agent.frames += 1
        self.agent.last_frame_ns = now

    def on_message(self, message: dict, now: int, live: bool) -> None:
        message_id = message.get("id")
        if isinstance(message_id, int):
            self.saw(message_id)
        if live:
            self.agent.delivered(message, now)

    def on_users(self, frame: dict, now: int) -> None:
        if frame["type"] in PRESENCE:
            self.presence += 1

    def on_joined(self, now: int) -> None:
        self.agent.joined(self, now)

    def on_resumed(self, now: int) -> None:
        if self.away_ns:
            self.agent.episodes.append((self.away_ns, self.away_code, now))
            self.away_ns = 0

    def on_error(self, frame: dict, now: int) -> None:
        self.agent.errors[str(frame.get("code"))] += 1


class Phase:
    """Live deliveries of one phase's messages (the phase is in the message text): their
    latencies, and per message id the deliveries and the sum of their latencies."""

    __slots__ = ("count", "latencies_us", "per_id", "per_id_us")

    def __init__(self) -> None:
        self.count = 0
        self.latencies_us = array("q")
        self.per_id: Counter = Counter()
        self.per_id_us: Counter = Counter()


class StormAgent:
    """One client process's members; see the module docstring."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.tasks: list[asyncio.Task] = []
        self.url = ""
        self.gate = asyncio.Semaphore(1)
        self.t0_ns = 0
        self.stopping = False
        self.phase = "storm"  # what failures and closes are counted under
        self.failures: dict[str, Counter] = {}
        self.closes: dict[str, Counter] = {}
        self.errors: Counter = Counter()
        self.joined_at = array("d")  # seconds from t0 to each member's first join
        self.join_s = array("d")  # seconds of each successful attempt (connect → user_list)
        self.phases: dict[str, Phase] = {}
        self.episodes: list[tuple[int, int, int]] = []  # (away ns, close code, resumed ns)
        self.frames = 0
        self.last_frame_ns = 0

    # --- commands ------------------------------------------------------------------------

    def start(self, url: str, tokens: list[str], inflight: int, t0_ns: int) -> int:
        """Every member starts connecting now; returns at once (watch with `status`)."""
        self.url = url
        self.gate = asyncio.Semaphore(max(1, inflight))
        self.t0_ns = t0_ns
        self.members = [Member(self, t) for t in tokens]
        self.tasks = [asyncio.ensure_future(self._life(m)) for m in self.members]
        return len(self.members)

    def set_phase(self, name: str) -> None:
        self.phase = name

    def status(self) -> dict[str, Any]:
        return {
            "members": len(self.members),
            "open": sum(1 for m in self.members if m.joined),
            "joined_once": sum(1 for m in self.members if m.joined_once),
            "away": sum(1 for m in self.members if m.away_ns),
            "frames": self.frames,
            "last_frame_ns": self.last_frame_ns,
            "deliveries": {name: stats.count for name, stats in self.phases.items()},
            "cpu_s": cpu_seconds(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def counters(self, reset: bool = True) -> dict[str, Any]:
        """Presence frames and reconnects per member since the last reset, and the
        failures and closes counted per phase."""
        presence = [m.presence for m in self.members]
        reconnects = [m.reconnects for m in self.members]
        if reset:
            for m in self.members:
                m.presence = m.reconnects = 0
        return {
            "n": len(self.members),
            "presence_sum": sum(presence),
            "presence_max": max(presence, default=0),
            "reconnects_sum": sum(reconnects),
            "reconnects_max": max(reconnects, default=0),
            "failures": {k: dict(v) for k, v in self.failures.items()},
            "closes": {k: dict(v) for k, v in self.closes.items()},
            "errors": dict(self.errors),
        }

    def joins(self) -> dict[str, bytes]:
        return {"joined_at": self.joined_at.tobytes(), "join_s": self.join_s.tobytes()}

    def phase_report(self, phase: str) -> dict[str, Any]:
        stats = self.phases.pop(phase, Phase())
        return {
            "latencies_us": stats.latencies_us.tobytes(),
            "per_id": dict(stats.per_id),
            "per_id_us": dict(stats.per_id_us),
        }

    def final_report(self, ids: list[int]) -> dict[str, Any]:
        """Which of `ids` each member lacks, and its away episodes (resumed or not)."""
        missing_total, members_missing = 0, 0
        missed: Counter = Counter()
        for m in self.members:
            lacks = [i for i in ids if i >= len(m.got) or not m.got[i]]
            if lacks:
                members_missing += 1
                missing_total += len(lacks)
                missed.update(lacks)
        pending = [(m.away_ns, m.away_code, 0) for m in self.members if m.away_ns]
        return {
            "missing": missing_total,
            "members_missing": members_missing,
            "missed_ids": dict(missed.most_common(50)),
            "not_open": sum(1 for m in self.members if not m.joined),
            "episodes": self.episodes + pending,
        }

    async def close_all(self) -> None:
        """Close every socket (their readers end), then stop whatever waits or connects."""
        self.stopping = True
        sockets = [m.ws for m in self.members if m.ws is not None]
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # --- one member ------------------------------------------------------------------

    async def _life(self, m: Member) -> None:
        while not self.stopping:
            delay = await self._session(m)
            await asyncio.sleep(delay)

    def _fail(self, reason: str) -> None:
        self.failures.setdefault(self.phase, Counter())[reason] += 1

    def _release(self, m: Member) -> None:
        if m.holding:
            m.holding = False
            self.gate.release()

    async def _session(self, m: Member) -> float:
        """One connection from handshake to close; the seconds to wait before the next."""
        await self.gate.acquire()
        m.holding = True
        m.started = time.monotonic_ns()
        try:
            ws = await aio.open_socket(
                self.url, m.token, open_timeout=JOIN_TIMEOUT, close_timeout=5, **aio.LEAN
            )
        except InvalidStatus as exc:
            self._release(m)
            self._fail(f"HTTP {exc.response.status_code}")
            return m.failed(aio.refused_for(exc))
        except Exception as exc:
            self._release(m)
            self._fail(type(exc).__name__)
            return m.failed()
        m.ws = ws
        resume = m.opened()  # a reconnect asks at once for what it missed
        if resume is not None:
            await aio.send(ws, resume)
        m.give_up = asyncio.get_running_loop().call_later(JOIN_TIMEOUT, ws.transport.abort)
        try:
            await aio.pump(ws, m)
        finally:
            m.give_up.cancel()
            self._release(m)
            m.ws = None
        return self._closed(m, ws)

    def joined(self, m: Member, now: int) -> None:
        """A member's `user_list`: its join is over, its gate slot goes to the next."""
        if m.give_up is not None:
            m.give_up.cancel()
        self._release(m)
        self.join_s.append((now - m.started) / 1e9)
        if m.joined_once:
            m.reconnects += 1
        else:
            self.joined_at.append((now - self.t0_ns) / 1e9)

    def _closed(self, m: Member, ws: ClientConnection) -> float:
        code = ws.close_code or 1006
        was_joined, refused = m.joined, m.refused_for is not None
        delay = m.closed(code, ws.close_reason or "")
        assert delay is not None  # a Member comes back after any close
        if self.stopping:
            return 0.0
        if not was_joined:
            self._fail(
                "overloaded" if refused and code == 1013 else f"closed {code} before joining"
            )
            return delay
        self.closes.setdefault(self.phase, Counter())[str(code)] += 1
        if not m.away_ns:
            m.away_ns, m.away_code = time.monotonic_ns(), code
        return delay

    def delivered(self, frame: dict, now: int) -> None:
        """A live room message: measured when it is one of ours (`b <phase> …`)."""
        text = frame.get("message")
        if isinstance(text, str) and text.startswith("b "):
            _, phase, _sender, _seq, sent, _ = text.split(" ", 5)
            stats = self.phases.get(phase)
            if stats is None:
                stats = self.phases[phase] = Phase()
            stats.count += 1
            latency_us = (now - int(sent)) // 1000
            stats.latencies_us.append(latency_us)
            message_id = frame.get("id")
            stats.per_id[message_id] += 1
            stats.per_id_us[message_id] += latency_us
