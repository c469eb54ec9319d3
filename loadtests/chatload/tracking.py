"""Delivery accounting: latency of every delivery, and every delivery that never came.

A load-test message carries its sender, a per-sender sequence number and its send time:

    lt <sender-key> <seq> <sent-at ms> <filler>

Each receiving connection (an Inbox) reports one Locust sample per delivery, the
latency being its arrival time minus the sent-at in the text (so all Locust machines
need synchronised clocks). Deliveries are expected for every message stored after the
connection joined — its `history` on join ends at id `join_max`, and the consumer joined
the room group before reading it, so any later id must arrive live. Two checks find the
ones that do not:

- gaps: a sequence number skipped by one sender is missing; still missing after
  --delivery-timeout it is reported as a failure;
- reconciliation: at the end (or when a connection leaves) a `resume` from `join_max`
  lists every stored message; each one not received, after a grace period for those in
  flight, is a failure too. Each miss is reported once.

Samples: request_type DELIVER, name `fanout` (room messages) or `private` (private
messages); failures carry LateDelivery or MissedDelivery. The delivery ratio is
1 - failures / requests of those rows.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import gevent
from locust import events
from locust.env import Environment

log = logging.getLogger(__name__)

DELIVER = "DELIVER"
PREFIX = "lt"


class LateDelivery(Exception):
    """Arrived, but after --delivery-timeout."""


class MissedDelivery(Exception):
    """Never arrived: a sequence gap that stayed open, or absent against `resume`."""


@dataclass(frozen=True, slots=True)
class Stamp:
    sender: str
    seq: int
    sent_ms: float


def compose(sender: str, seq: int, size: int) -> str:
    head = f"{PREFIX} {sender} {seq} {time.time() * 1000:.3f}"
    return head + " " + "x" * max(1, size - len(head) - 1)


def parse(text: object) -> Stamp | None:
    """The stamp of a load-test message; None for any other text (a human, a push)."""
    if not isinstance(text, str) or not text.startswith(PREFIX + " "):
        return None
    parts = text.split(" ", 4)
    if len(parts) < 4:
        return None
    try:
        return Stamp(parts[1], int(parts[2]), float(parts[3]))
    except ValueError:
        return None


def fire(
    environment: Environment,
    name: str,
    response_time: float,
    exception: Exception | None = None,
    request_type: str = DELIVER,
    length: int = 0,
) -> None:
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


@dataclass
class _Sender:
    top: int = 0
    gaps: dict[int, float] = field(default_factory=dict)  # seq -> noticed at


class Inbox:
    """What one connection received in one room, from its join on."""

    def __init__(self, environment: Environment, room: str, timeout: float, name: str):
        self.environment = environment
        self.room = room
        self.timeout = timeout
        self.name = name
        self.join_max: int | None = None
        self.received: set[int] = set()
        self.senders: dict[str, _Sender] = {}
        self.reported: set[tuple[str, int]] = set()
        self.reported_ids: set[int] = set()
        self.socket: Any = None  # the ChatSocket this inbox listens on
        self.reconciled = False

    def joined(self, history: list[dict]) -> None:
        self.join_max = max((m.get("id", 0) for m in history), default=0)

    def deliver(self, frame: dict, arrived: float) -> None:
        message_id = frame.get("id")
        if not isinstance(message_id, int) or message_id in self.received:
            return
        if self.join_max is not None and message_id <= self.join_max:
            return  # also in the join history: stored before we joined
        self.received.add(message_id)
        stamp = parse(frame.get("message"))
        if stamp is None:
            return
        latency = arrived * 1000 - stamp.sent_ms
        key = (stamp.sender, stamp.seq)
        if key in self.reported:
            log.info("delivery of %s came after it was reported missed", key)
            return
        late = latency > self.timeout * 1000
        fire(
            self.environment,
            self.name,
            latency,
            LateDelivery(f"after more than {self.timeout:g} s") if late else None,
            length=len(frame.get("message", "")),
        )
        self._track(stamp, arrived)

    def _track(self, stamp: Stamp, now: float) -> None:
        track = self.senders.setdefault(stamp.sender, _Sender())
        if stamp.seq > track.top:
            if track.top:
                for seq in range(track.top + 1, stamp.seq):
                    track.gaps[seq] = now
            track.top = stamp.seq
        else:
            track.gaps.pop(stamp.seq, None)

    def expire_gaps(self, now: float) -> None:
        for sender, track in self.senders.items():
            for seq, since in list(track.gaps.items()):
                if now - since > self.timeout:
                    del track.gaps[seq]
                    self._missed((sender, seq), "a gap in a sender's sequence stayed open")

    def _missed(self, key: tuple[str, int] | None, why: str, message_id: int | None = None) -> None:
        if key is not None:
            if key in self.reported:
                return
            self.reported.add(key)
        if message_id is not None:
            if message_id in self.reported_ids:
                return
            self.reported_ids.add(message_id)
        fire(self.environment, self.name, self.timeout * 1000, MissedDelivery(why))

    def absent(self, stored: Iterable[dict]) -> list[dict]:
        """Stored messages this connection should have received and has not (yet)."""
        floor = self.join_max or 0
        out = []
        for m in stored:
            message_id = m.get("id")
            if not isinstance(message_id, int) or message_id <= floor:
                continue
            if message_id in self.received or message_id in self.reported_ids:
                continue
            stamp = parse(m.get("message"))
            if stamp is not None and (stamp.sender, stamp.seq) in self.reported:
                continue
            out.append(m)
        return out

    def may_still_come(self, message: dict, now: float) -> bool:
        """In flight for less than the timeout: not missed yet."""
        stamp = parse(message.get("message"))
        if stamp is not None:
            sent = stamp.sent_ms / 1000
        else:
            try:
                sent = datetime.fromisoformat(message.get("timestamp", "")).timestamp()
            except (TypeError, ValueError):
                return False
        return now < sent + self.timeout

    def settle_against(self, stored: list[dict], deadline: float) -> int:
        """Wait for the absent ones still in flight (until `deadline`), report the rest."""
        missing = self.absent(stored)
        while missing and time.time() < deadline:
            now = time.time()
            if not any(self.may_still_come(m, now) for m in missing):
                break
            gevent.sleep(0.2)
            missing = self.absent(missing)
        for m in missing:
            stamp = parse(m.get("message"))
            key = (stamp.sender, stamp.seq) if stamp else None
            self._missed(key, "absent against resume", m["id"])
        return len(missing)


class Registry:
    """Every live Inbox of this process, and the greenlet that closes stale gaps."""

    def __init__(self) -> None:
        self.inboxes: weakref.WeakSet[Inbox] = weakref.WeakSet()
        self._checker: gevent.Greenlet | None = None

    def add(self, inbox: Inbox) -> None:
        self.inboxes.add(inbox)
        if self._checker is None or self._checker.dead:
            self._checker = gevent.spawn(self._check)

    def discard(self, inbox: Inbox) -> None:
        self.inboxes.discard(inbox)

    def by_room(self) -> dict[str, list[Inbox]]:
        rooms: dict[str, list[Inbox]] = {}
        for inbox in list(self.inboxes):
            rooms.setdefault(inbox.room, []).append(inbox)
        return rooms

    def _check(self) -> None:
        while True:
            gevent.sleep(1.0)
            now = time.time()
            for inbox in list(self.inboxes):
                inbox.expire_gaps(now)


registry = Registry()


class PrivateLedger:
    """Private messages sent from this process and not yet seen by their recipient.

    The pm scenario pairs users of the same process, so a private message that never
    arrives is found here after --delivery-timeout.
    """

    def __init__(self) -> None:
        self.pending: dict[str, tuple[float, Environment, float]] = {}
        self._checker: gevent.Greenlet | None = None

    def sent(self, environment: Environment, text: str, timeout: float) -> None:
        self.pending[text] = (time.time(), environment, timeout)
        if self._checker is None or self._checker.dead:
            self._checker = gevent.spawn(self._check)

    def received(
        self, environment: Environment, frame: dict, arrived: float, timeout: float
    ) -> None:
        text = frame.get("message")
        if isinstance(text, str):
            self.pending.pop(text, None)
        stamp = parse(text)
        if stamp is None:
            return
        latency = arrived * 1000 - stamp.sent_ms
        late = latency > timeout * 1000
        fire(
            environment,
            "private",
            latency,
            LateDelivery(f"after more than {timeout:g} s") if late else None,
            length=len(text),
        )

    def expire(self, now: float, *, everything: bool = False) -> None:
        """Report the pending ones older than their timeout (or all of them, at the end)."""
        for text, (sent_at, environment, timeout) in list(self.pending.items()):
            if everything or now - sent_at > timeout:
                del self.pending[text]
                fire(environment, "private", timeout * 1000, MissedDelivery("private message"))

    def _check(self) -> None:
        while self.pending:
            gevent.sleep(1.0)
            self.expire(time.time())


ledger = PrivateLedger()


def settle(inboxes: list[Inbox], stored: list[dict], deadline: float) -> int:
    """Reconcile several receivers of one room against one fetched list, concurrently."""
    jobs = [gevent.spawn(inbox.settle_against, stored, deadline) for inbox in inboxes]
    gevent.joinall(jobs)
    return sum(job.value or 0 for job in jobs)


def describe(stored: list[dict]) -> dict[str, Any]:
    return {"messages": len(stored), "last_id": stored[-1]["id"] if stored else None}


@events.test_stop.add_listener
def _forget(**_: Any) -> None:
    registry.inboxes = weakref.WeakSet()
