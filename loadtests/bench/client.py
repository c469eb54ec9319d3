"""The benchmark's measuring client: asyncio `websockets`, spread over processes.

Locust's per-event bookkeeping costs too much at the benchmark's delivery rates
(docs/benchmarks.md, "Method"), so it has its own client. The same client measures the
project, the ceiling and the tutorial floor. Each Agent process holds a share of the
connections, each read by chatclient's `pump` into a Listener (a chatclient Session:
every frame is parsed, the join is its `user_list`), and keeps, per phase of the run:

- deliveries and their latency (arrival minus the send time in the text: senders and
  receivers are processes on one machine, sharing CLOCK_MONOTONIC),
- arrivals per 100 ms (deliveries per second while the senders were sending),
- deliveries per message (which messages some member missed).

One Agent also sends: its connections post `rate` messages/s in total, round robin,
each text `b <phase> <sender> <seq> <sent ns> xxx…`, or only as many as the coordinator
hands out credit for (saturation). Agents report their own CPU time, so a saturated
client shows in the results instead of passing for a slow server.

The coordinator (bench/phases.py) drives agents through a Pipe with `Pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import os
import resource
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from chatclient import aio, protocol
from chatclient.protocol import Backoff, Session
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

ATTEMPTS = 5  # handshakes per connection before giving up
HANDSHAKE_BACKOFF = Backoff(base=0.5, cap=8.0, jitter=0.5)
BUCKET_NS = 100_000_000  # arrivals are counted per 100 ms


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    deliveries: int = 0
    latencies_us: array = field(default_factory=lambda: array("q"))
    buckets: Counter = field(default_factory=Counter)
    per_message: Counter = field(default_factory=Counter)


class Listener(Session):
    """One connection's frames, counted by its Agent; `b …` messages are measured."""

    __slots__ = ("agent", "joined_future")

    def __init__(self, agent: Agent, joined_future: asyncio.Future) -> None:
        super().__init__()
        self.agent = agent
        self.joined_future = joined_future

    def on_frame(self, frame: dict, now: int) -> None:
        self.agent.frames += 1
        self.agent.last_frame_ns = now

    def on_message(self, message: dict, now: int, live: bool) -> None:
        if live:
            self.agent.delivered(message.get("message"), now)

    def on_joined(self, now: int) -> None:
        if not self.joined_future.done():
            self.joined_future.set_result(None)

    def on_error(self, frame: dict, now: int) -> None:
        self.agent.errors[str(frame.get("code"))] += 1


class Agent:
    """One process's connections and what they received."""

    def __init__(self) -> None:
        self.conns: list[ClientConnection] = []
        self.readers: list[asyncio.Task] = []
        self.phases: dict[str, Phase] = {}
        self.frames = 0
        self.last_frame_ns = 0
        self.errors: Counter = Counter()
        self.closes: Counter = Counter()
        self.sent: Counter = Counter()
        self.rate = 1.0
        self.late = 0
        self.credits: float | None = None
        self.granted = asyncio.Event()
        self.sending: asyncio.Future | None = None

    # --- connections -------------------------------------------------------------------

    async def connect(
        self, urls: list[str], tokens: list[str], join_frame: str | None, concurrency: int
    ) -> dict[str, Any]:
        """Open one connection per url (with its token); wait for each one's join (its
        `user_list`; at once when `join_frame` is None: the tutorial sends no greeting)."""
        gate = asyncio.Semaphore(concurrency)
        times: list[float] = []
        failures: Counter = Counter()

        async def one(url: str, token: str) -> None:
            # Like a real client: a refused handshake is retried with a backoff (counted).
            for attempt in range(ATTEMPTS):
                if attempt:
                    await asyncio.sleep(HANDSHAKE_BACKOFF.step(attempt))
                async with gate:
                    if await attempt_one(url, token):
                        return

        async def attempt_one(url: str, token: str) -> bool:
            started = time.monotonic()
            try:
                ws = await aio.open_socket(url, token, open_timeout=60, **aio.LEAN)
            except InvalidStatus as exc:
                failures[f"HTTP {exc.response.status_code}"] += 1
                return False
            except Exception as exc:
                failures[type(exc).__name__] += 1
                return False
            joined = asyncio.get_running_loop().create_future()
            if join_frame is None:
                joined.set_result(None)
            self.conns.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws, Listener(self, joined))))
            try:
                await asyncio.wait_for(joined, 60)
            except (TimeoutError, ConnectionError) as exc:
                failures[f"join: {type(exc).__name__}"] += 1
                self.conns.remove(ws)
                await ws.close()
                return False
            times.append(time.monotonic() - started)
            return True

        await asyncio.gather(*(one(u, t) for u, t in zip(urls, tokens, strict=True)))
        return {"connected": len(times), "failures": dict(failures), "join_s": times}

    async def drop(self, count: int) -> int:
        """Close the last `count` connections (a room shrinks)."""
        gone, self.conns = (
            self.conns[len(self.conns) - count :],
            self.conns[: len(self.conns) - count],
        )
        await asyncio.gather(*(ws.close() for ws in gone), return_exceptions=True)
        return len(gone)

    async def close_all(self) -> None:
        await self.drop(len(self.conns))
        for task in self.readers:
            task.cancel()

    # --- receiving ---------------------------------------------------------------------

    async def _read(self, ws: ClientConnection, listener: Listener) -> None:
        try:
            await aio.pump(ws, listener)
        finally:
            code = ws.close_code
            self.closes[str(code)] += 1
            joined = listener.joined_future
            if not joined.done():
                joined.set_exception(ConnectionError(f"closed {code} before joining"))

    def delivered(self, text: Any, now: int) -> None:
        """A live room message: measured when it is one of ours (`b <phase> …`)."""
        if not isinstance(text, str) or not text.startswith("b "):
            return
        _, phase, sender, seq, sent, _ = text.split(" ", 5)
        stats = self.phases.get(phase)
        if stats is None:
            stats = self.phases[phase] = Phase()
        stats.deliveries += 1
        stats.latencies_us.append((now - int(sent)) // 1000)
        stats.buckets[now // BUCKET_NS] += 1
        stats.per_message[sender, int(seq)] += 1

    # --- sending -----------------------------------------------------------------------

    def start_send(
        self, phase: str, rate: float, seconds: float, size: int, credit: bool = False
    ) -> None:
        """Send from this agent's connections for `seconds`, round robin, at `rate`
        messages/s in total — or, with `credit`, only as many as `grant` allows (and at
        most `rate`): the coordinator's closed loop for saturation."""
        senders = [ws for ws in self.conns if ws.state.name == "OPEN"]
        self.rate = rate
        self.late = 0
        self.credits = 0.0 if credit else None
        self.granted = asyncio.Event()
        self.sending = asyncio.ensure_future(self._send(senders, phase, seconds, size))

    def grant(self, messages: float) -> None:
        if self.credits is not None:
            self.credits += messages
            if self.credits >= 1:
                self.granted.set()

    async def wait_send(self) -> dict[str, Any]:
        assert self.sending is not None
        phase = await self.sending
        return {"sent": self.sent[phase], "late_ticks": self.late}

    async def _send(
        self, senders: list[ClientConnection], phase: str, seconds: float, size: int
    ) -> str:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        filler = "x" * size
        pid = os.getpid()
        seqs: Counter = Counter()
        due = loop.time()
        n = 0
        while senders:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05 and self.credits is None:
                self.late += 1
            if self.credits is not None and self.credits < 1:
                self.granted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.granted.wait(), max(0.0, end - loop.time()))
                due = max(due, loop.time())
            if loop.time() >= end:
                break
            if self.credits is not None:
                self.credits -= 1
            i = n % len(senders)
            n += 1
            seqs[i] += 1
            text = f"b {phase} s{pid}.{i} {seqs[i]} {time.monotonic_ns()} {filler}"
            if await aio.send(senders[i], protocol.chat_message(text)):
                self.sent[phase] += 1
            else:
                self.errors["sender closed"] += 1
            due += 1.0 / self.rate
        return phase

    # --- reports -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        open_conns = sum(1 for ws in self.conns if ws.state.name == "OPEN")
        return {
            "deliveries": {phase: stats.deliveries for phase, stats in self.phases.items()},
            "sent": dict(self.sent),
            "frames": self.frames,
            "last_frame_ns": self.last_frame_ns,
            "open": open_conns,
            "cpu_s": cpu_seconds(),
            "errors": dict(self.errors),
            "closes": dict(self.closes),
        }

    def report(self, phase: str) -> dict[str, Any]:
        stats = self.phases.pop(phase, Phase())
        return {
            "deliveries": stats.deliveries,
            "latencies_us": stats.latencies_us.tobytes(),
            "buckets": dict(stats.buckets),
            "per_message": [[s, q, n] for (s, q), n in stats.per_message.items()],
        }


# --- one Agent per process, driven through a Pipe ------------------------------------------


def agent_main(control: Connection, factory: Callable[[], Any] = Agent) -> None:
    """One client process: an agent (`factory()`) whose public methods the coordinator calls
    by name through the Pipe; coroutines are awaited on the agent's own event loop."""
    raise_open_files_limit()
    loop = asyncio.new_event_loop()
    agent = factory()

    async def handle(command: str, args: dict[str, Any]) -> Any:
        if command == "close":
            await agent.close_all()
            return None
        if command.startswith("_") or not callable(getattr(agent, command, None)):
            raise ValueError(command)
        result = getattr(agent, command)(**args)
        return await result if inspect.isawaitable(result) else result

    def serve() -> None:
        while True:
            try:
                command, args = control.recv()
            except EOFError:
                break
            future = asyncio.run_coroutine_threadsafe(handle(command, args), loop)
            try:
                control.send(("ok", future.result()))
            except Exception as exc:
                control.send(("error", repr(exc)))
            if command == "close":
                break
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=serve, daemon=True).start()
    loop.run_forever()


def raise_open_files_limit() -> None:
    """Every connection is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Pool:
    """Client processes: `listeners` agents for the room and one agent for the senders
    (`sender=False`: listeners only). `factory` makes each process's agent."""

    def __init__(
        self, listeners: int, factory: Callable[[], Any] = Agent, sender: bool = True
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.has_sender = sender
        for _ in range(listeners + (1 if sender else 0)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=agent_main, args=(child, factory), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    @property
    def sender(self) -> Connection:
        if not self.has_sender:
            raise AttributeError("this pool has no sender agent")
        return self.pipes[0]

    @property
    def listeners(self) -> list[Connection]:
        return self.pipes[1:] if self.has_sender else self.pipes

    @staticmethod
    def call(pipe: Connection, command: str, **args: Any) -> Any:
        pipe.send((command, args))
        status, value = pipe.recv()
        if status != "ok":
            raise RuntimeError(f"client agent failed on {command}: {value}")
        return value

    def call_all(self, pipes: list[Connection], command: str, args: list[dict]) -> list[Any]:
        for pipe, a in zip(pipes, args, strict=True):
            pipe.send((command, a))
        out = []
        for pipe in pipes:
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"client agent failed on {command}: {value}")
            out.append(value)
        return out

    def status(self) -> list[dict[str, Any]]:
        return self.call_all(self.pipes, "status", [{}] * len(self.pipes))

    def reports(self, phase: str) -> list[dict[str, Any]]:
        return self.call_all(self.pipes, "report", [{"phase": phase}] * len(self.pipes))

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self.call(pipe, "close")
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
