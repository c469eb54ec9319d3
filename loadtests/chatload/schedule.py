"""When to send and when to reconcile, the same in every Locust process.

A run has four phases, computed from the test start and the run time (`--end-after`,
which defaults to `--run-time`):

    ramp-up ─ settle ─ send ……………………………… drain ─ reconcile ─ end

Senders stop `drain + reconcile_time` seconds before the end so that every message is
delivered (or late) before receivers reconcile with `resume`; the reconciliation then
finishes while the run is still going, so its results reach the master's statistics
even in a distributed run (Locust stops workers without waiting for on_stop).
Without a run time (web UI) there is no end: receivers reconcile in on_stop instead.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent.event import Event
from locust import events
from locust.env import Environment

from . import options


class Schedule:
    def __init__(self) -> None:
        self.started_at: float | None = None
        self.ready = Event()  # spawning complete + settle
        self.environment: Environment | None = None

    def reset(self, environment: Environment) -> None:
        self.environment = environment
        self.started_at = time.time()
        self.ready.clear()

    @property
    def opts(self) -> Any:
        assert self.environment is not None
        return options.get(self.environment)

    @property
    def end_at(self) -> float | None:
        if self.started_at is None or not self.opts.end_after:
            return None
        return self.started_at + self.opts.end_after

    @property
    def stop_sending_at(self) -> float | None:
        end = self.end_at
        return None if end is None else end - self.opts.drain - self.opts.reconcile_time

    @property
    def reconcile_at(self) -> float | None:
        end = self.end_at
        return None if end is None else end - self.opts.reconcile_time

    def sending(self) -> bool:
        stop = self.stop_sending_at
        return stop is None or time.time() < stop

    def wait_ready(self) -> None:
        """Block until spawning completed and the room settled (join storms are over)."""
        self.ready.wait()


schedule = Schedule()


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    schedule.reset(environment)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count: int, **_: Any) -> None:
    if schedule.environment is None or schedule.ready.is_set():
        return
    gevent.spawn_later(schedule.opts.settle, schedule.ready.set)
