"""The abstract chat user: one token, one socket in one room, its Inbox, its sends.

Scenarios (scenarios.py) are small subclasses that choose the room and the tasks. The
socket's receive greenlet belongs to the user; a socket the server closes is reported
(WS close) and reopened by the next task.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import gevent
from chatclient import protocol
from locust import User, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from . import options, tracking
from .client import ChatSocket
from .schedule import schedule
from .tokens import pool

_numbers = itertools.count()
OPEN_BACKOFF = protocol.Backoff(base=0.5, cap=10.0, jitter=0.5)  # after failed opens, in a row


def worker_index(environment: Environment) -> int:
    runner = environment.runner
    return runner.worker_index if isinstance(runner, WorkerRunner) else 0


class Presence:
    """When this process's users started joining or leaving: others' latency to see it."""

    def __init__(self) -> None:
        self.joining: dict[str, float] = {}
        self.leaving: dict[str, float] = {}

    def observed(self, environment: Environment, frame: dict, arrived: float) -> None:
        """A `presence` frame (protocol 2): each name in it, as its own join or leave."""
        for kind, names, started in (
            ("user_join", frame.get("joins", ()), self.joining),
            ("user_leave", frame.get("leaves", ()), self.leaving),
        ):
            for user in names:
                since = started.get(user)
                if since is not None:
                    latency = (arrived - since) * 1000
                    tracking.fire(environment, kind, latency, request_type="PRESENCE")


presence = Presence()


class ChatUser(User):
    abstract = True
    track_presence = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.number = next(_numbers)
        self.opts: Any = options.get(environment)
        self.username = ""
        self.token = ""
        self.socket: ChatSocket | None = None
        self.inbox: tracking.Inbox | None = None
        self.sender_key = ""
        self.seq = 0  # room messages; gaps in it are missed deliveries
        self.private_seq = 0  # private messages, a sequence of their own
        self.failures_in_a_row = 0
        self.retry_after: float | None = None  # the last refused handshake's Retry-After

    # --- what subclasses choose ------------------------------------------------------

    def room(self) -> str:
        return self.opts.room

    def base_url(self) -> str:
        hosts = [h for h in self.opts.ws_hosts.split(",") if h.strip()]
        return hosts[self.number % len(hosts)].strip() if hosts else str(self.host)

    # --- socket ----------------------------------------------------------------------

    def on_start(self) -> None:
        self.username, self.token = pool.take(self.environment)
        self.open()

    def open(self) -> bool:
        """Connect and join; back off after failures so a dead server is not hammered."""
        if self.failures_in_a_row:
            # A refused handshake's Retry-After when it had one, else the backoff.
            gevent.sleep(OPEN_BACKOFF.delay(self.failures_in_a_row, after=self.retry_after))
        if self.track_presence:
            presence.joining[self.username] = time.time()
        room = self.room()
        self.inbox = tracking.Inbox(
            self.environment, room, self.opts.delivery_timeout, name="fanout"
        )
        socket = ChatSocket(self.environment, self.base_url(), room, self.token, self.on_frame)
        self.socket = socket
        if not socket.connect():
            self.failures_in_a_row += 1
            self.retry_after = socket.refused_for
            return False
        self.failures_in_a_row = 0
        self.retry_after = None
        self.inbox.joined(socket.join_history)
        self.inbox.socket = socket
        tracking.registry.add(self.inbox)
        self.sender_key = f"{self.username}.{random.getrandbits(32):08x}"
        self.seq = self.private_seq = 0
        return True

    def ensure_open(self) -> bool:
        if self.socket is not None and self.socket.open:
            return True
        if self.inbox is not None:
            tracking.registry.discard(self.inbox)
        return self.open()

    def leave(self, reconcile: bool = True) -> None:
        """Close this session; first check it received everything stored while it was in."""
        socket, inbox = self.socket, self.inbox
        if socket is None or inbox is None:
            return
        if reconcile and socket.open and not inbox.reconciled:
            deadline = time.time() + self.opts.delivery_timeout
            stored = socket.resume(inbox.join_max or 0, deadline)
            if stored is not None:
                inbox.settle_against(stored, deadline)
                inbox.reconciled = True
        tracking.registry.discard(inbox)
        if self.track_presence:
            presence.leaving[self.username] = time.time()
        socket.close()
        self.socket = None

    def on_stop(self) -> None:
        # With a run time the schedule reconciled already; without one, do it now.
        self.leave(reconcile=schedule.end_at is None)

    # --- frames ----------------------------------------------------------------------

    def on_frame(self, frame: dict, arrived: float) -> None:
        kind = frame.get("type")
        if kind == "chat_message":
            if self.opts.selftest_drop and random.random() < self.opts.selftest_drop:
                return  # the checks must notice (tests/load)
            if self.inbox is not None:
                self.inbox.deliver(frame, arrived)
        elif kind == "private_message":
            tracking.ledger.received(self.environment, frame, arrived, self.opts.delivery_timeout)
        elif kind == "private_message_delivered":
            stamp = tracking.parse(frame.get("message"))
            if stamp is not None:
                latency = arrived * 1000 - stamp.sent_ms
                tracking.fire(self.environment, "private receipt", latency, request_type="WS")
        elif kind == "presence" and self.track_presence:
            presence.observed(self.environment, frame, arrived)

    # --- actions ---------------------------------------------------------------------

    def ready_to_send(self) -> bool:
        """Only after ramp-up settled, and not in the drain before the reconciliation."""
        if not schedule.ready.is_set():
            schedule.ready.wait(timeout=1.0)
            return False
        return schedule.sending() and self.ensure_open()

    def send_chat(self) -> None:
        assert self.socket is not None
        self.seq += 1
        text = tracking.compose(self.sender_key, self.seq, self.opts.message_bytes)
        self.socket.send(protocol.chat_message(text))

    def send_private(self, to: str) -> None:
        assert self.socket is not None
        self.private_seq += 1
        key = self.sender_key + ".pm"
        text = tracking.compose(key, self.private_seq, self.opts.message_bytes)
        tracking.ledger.sent(self.environment, text, self.opts.delivery_timeout)
        self.socket.send(protocol.private_message(to, text))


# --- the end-of-run reconciliation, once per process and room -------------------------


def reconcile_rooms(environment: Environment) -> None:
    """At the schedule's reconcile time: one `resume` per room, checked for every inbox."""
    end = schedule.end_at
    assert end is not None
    deadline = end - 1.0
    for room, inboxes in tracking.registry.by_room().items():
        live = [i for i in inboxes if i.socket is not None and i.socket.open]
        if not live:
            continue
        floor = min(i.join_max or 0 for i in live)
        stored = live[0].socket.resume(floor, deadline - 2.0)
        if stored is None:
            tracking.fire(
                environment, "reconcile", 0, TimeoutError(f"no resume reply in {room}"), "WS"
            )
            continue
        tracking.settle(live, stored, deadline)
        for inbox in live:
            inbox.reconciled = True
    tracking.ledger.expire(time.time(), everything=True)


@events.test_start.add_listener
def _plan_reconciliation(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is None or environment.runner is None:
        return
    if isinstance(environment.runner, MasterRunner):
        return
    at = schedule.reconcile_at
    if at is not None:
        gevent.spawn_later(max(0.0, at - time.time()), reconcile_rooms, environment)
