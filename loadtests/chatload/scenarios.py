"""The scenarios, each a few small user classes (and at most one shape).

fanout  one room (--room), --senders users sending --rate messages/s in total, every
        other user listening: how fast and how completely one message reaches a room
rooms   rooms of --room-size users, each user sending --user-rate messages/s
pm      private messages between users of this process, spread over --ws-hosts
        replicas so sender and recipient sit on different ones when there are several
mixed   chatters (messages, typing, scroll-back, private messages) and browsers (room
        index, room page, history API), ramped up in steps
churn   users that stay --lifetime seconds, check they got everything (resume), leave
        and come back: presence join/leave load, with join/leave latency as seen by others
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust import HttpUser, LoadTestShape, between, constant, events, task
from locust.env import Environment

from . import options
from .schedule import schedule
from .tokens import pool
from .users import ChatUser, worker_index


class Paced:
    """A wait_time that keeps an average interval whatever the task took, from a random
    phase so that users do not send in lockstep."""

    interval = 1.0
    _next: float | None = None

    def wait_time(self) -> float:
        now = time.monotonic()
        if self._next is None:
            self._next = now + random.uniform(0, self.interval)
        else:
            self._next = max(self._next + self.interval, now)
        return self._next - now


def _room(user: ChatUser, scenario: str) -> str:
    k = user.number // max(1, user.opts.room_size)
    return f"lt-{scenario}-{worker_index(user.environment)}-{k}"


# --- fanout ------------------------------------------------------------------------------


class FanoutListener(ChatUser):
    weight = 1
    wait_time = constant(5)

    @task
    def listen(self) -> None:
        self.ensure_open()


class FanoutSender(Paced, ChatUser):
    fixed_count = 4  # --senders, set at init

    def on_start(self) -> None:
        super().on_start()
        self.interval = self.opts.senders / self.opts.rate

    @task
    def send(self) -> None:
        if self.ready_to_send():
            self.send_chat()


# --- rooms -------------------------------------------------------------------------------


class RoomUser(Paced, ChatUser):
    def room(self) -> str:
        return _room(self, "rooms")

    def on_start(self) -> None:
        super().on_start()
        self.interval = 1.0 / self.opts.user_rate

    @task
    def send(self) -> None:
        if self.ready_to_send():
            self.send_chat()


# --- pm ----------------------------------------------------------------------------------


@dataclass
class Peers:
    """Users of this process that can receive private messages, by replica index."""

    replica: dict[str, int] = field(default_factory=dict)

    def pick(self, me: str) -> str | None:
        mine = self.replica.get(me)
        others = [u for u, r in self.replica.items() if u != me and r != mine]
        others = others or [u for u in self.replica if u != me]
        return random.choice(others) if others else None


peers = Peers()


class PmUser(Paced, ChatUser):
    def room(self) -> str:
        return _room(self, "pm")

    def on_start(self) -> None:
        super().on_start()
        self.interval = 1.0 / self.opts.user_rate
        hosts = [h for h in self.opts.ws_hosts.split(",") if h.strip()] or [""]
        peers.replica[self.username] = self.number % len(hosts)

    def on_stop(self) -> None:
        peers.replica.pop(self.username, None)
        super().on_stop()

    @task
    def send(self) -> None:
        to = peers.pick(self.username)
        if to is not None and self.ready_to_send():
            self.send_private(to)


# --- mixed -------------------------------------------------------------------------------


class Stages(LoadTestShape):
    """Declarative steps: (share of the run time at which a step ends, share of --users)."""

    abstract = True
    stages: tuple[tuple[float, float], ...] = ((1.0, 1.0),)

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts: Any = options.get(self.runner.environment)
        users, rate = int(opts.num_users or 1), float(opts.spawn_rate or 1)
        total = float(opts.run_time or 0)
        elapsed = self.get_run_time()
        if total and elapsed > total:
            return None
        for end, share in self.stages:
            if not total or elapsed < end * total:
                return max(1, round(users * share)), rate
        return users, rate


class MixedSteps(Stages):
    abstract = False
    stages = ((0.2, 0.25), (0.4, 0.5), (1.0, 1.0))


class MixedChatter(Paced, ChatUser):
    weight = 4

    def room(self) -> str:
        return _room(self, "mixed")

    def on_start(self) -> None:
        super().on_start()
        self.interval = 1.0 / self.opts.user_rate
        peers.replica[self.username] = 0

    def on_stop(self) -> None:
        peers.replica.pop(self.username, None)
        super().on_stop()

    @task(6)
    def chat(self) -> None:
        if self.ready_to_send():
            self.send_chat()

    @task(2)
    def typing(self) -> None:
        if self.ready_to_send():
            self.socket.send({"type": "typing"})

    @task(1)
    def scroll_back(self) -> None:
        if self.ensure_open():
            oldest = min((m["id"] for m in self.socket.join_history), default=None)
            frame: dict[str, Any] = {"type": "history", "limit": 50}
            if oldest is not None:
                frame["before"] = oldest
            self.socket.request(frame, "history", self.opts.delivery_timeout)

    @task(1)
    def private(self) -> None:
        to = peers.pick(self.username)
        if to is not None and self.ready_to_send():
            self.send_private(to)


class MixedBrowser(HttpUser):
    weight = 1
    wait_time = between(1, 4)

    def on_start(self) -> None:
        _, token = pool.take(self.environment)
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.rooms = max(1, len(peers.replica) // max(1, options.get(self.environment).room_size))

    def _room(self) -> str:
        return f"lt-mixed-{worker_index(self.environment)}-{random.randrange(self.rooms)}"

    @task(2)
    def index(self) -> None:
        self.client.get("/chat/", name="/chat/")

    @task(3)
    def room_page(self) -> None:
        self.client.get(f"/chat/{self._room()}/", name="/chat/[room]/")

    @task(4)
    def history(self) -> None:
        self.client.get(
            f"/api/rooms/{self._room()}/messages?limit=50", name="/api/rooms/[room]/messages"
        )


# --- churn -------------------------------------------------------------------------------


class ChurnUser(ChatUser):
    track_presence = True
    wait_time = between(0.5, 2.0)

    def room(self) -> str:
        return _room(self, "churn")

    @task
    def session(self) -> None:
        if not self.ensure_open():
            return
        low, _, high = self.opts.lifetime.partition("-")
        until = time.monotonic() + random.uniform(float(low), float(high or low))
        interval = 1.0 / self.opts.user_rate
        while time.monotonic() < until:
            gevent.sleep(min(interval * random.uniform(0.5, 1.5), until - time.monotonic()))
            if time.monotonic() < until and self.ready_to_send():
                self.send_chat()
        # In the drain and reconciliation at the end everyone stays, to be reconciled.
        if schedule.sending():
            self.leave(reconcile=True)


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    users: tuple[type, ...]
    shape: type[LoadTestShape] | None = None
    criteria: tuple[str, ...] = ("fanout",)


SCENARIOS: dict[str, Scenario] = {
    "fanout": Scenario((FanoutListener, FanoutSender)),
    "rooms": Scenario((RoomUser,)),
    "pm": Scenario((PmUser,), criteria=("private",)),
    "mixed": Scenario((MixedChatter, MixedBrowser), MixedSteps, ("fanout", "private")),
    "churn": Scenario((ChurnUser,)),
}
assert set(SCENARIOS) == set(options.SCENARIOS)


@events.init.add_listener
def _senders_from_options(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        FanoutSender.fixed_count = max(1, int(environment.parsed_options.senders))
