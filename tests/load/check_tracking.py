"""The delivery checks of loadtests/chatload/tracking.py on made-up frames, no server.

Run as its own process by test_tracking.py: importing Locust monkey-patches the
standard library with gevent, which must not happen inside the pytest process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))

from chatload import tracking


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def fire(self, **kwargs: object) -> None:
        self.calls.append(kwargs)

    def failures(self, kind: type[Exception]) -> int:
        return sum(isinstance(c["exception"], kind) for c in self.calls)

    def successes(self) -> int:
        return sum(c["exception"] is None for c in self.calls)


def make_inbox(timeout: float = 1.0) -> tuple[tracking.Inbox, Recorder]:
    recorder = Recorder()
    environment = SimpleNamespace(events=SimpleNamespace(request=recorder))
    return tracking.Inbox(environment, "room", timeout, "fanout"), recorder  # type: ignore[arg-type]


def frame(message_id: int, text: str) -> dict:
    return {"type": "chat_message", "id": message_id, "message": text}


def check_latency_duplicates_and_history() -> None:
    inbox, rec = make_inbox()
    inbox.joined([{"id": 5}, {"id": 7}])
    text = tracking.compose("alice.1", 1, 64)
    assert len(text) == 64 and tracking.parse(text).seq == 1
    inbox.deliver(frame(7, text), time.time())  # also in the join history: not counted
    inbox.deliver(frame(8, text), time.time() + 0.05)
    inbox.deliver(frame(8, text), time.time() + 0.05)  # duplicate: once
    assert rec.successes() == 1, rec.calls
    assert 40 <= rec.calls[0]["response_time"] < 1000


def check_gap_then_timeout() -> None:
    inbox, rec = make_inbox(timeout=1.0)
    inbox.joined([])
    now = time.time()
    inbox.deliver(frame(1, tracking.compose("bob.1", 1, 40)), now)
    inbox.deliver(frame(3, tracking.compose("bob.1", 3, 40)), now)  # seq 2 is a gap
    inbox.expire_gaps(now + 0.5)
    assert rec.failures(tracking.MissedDelivery) == 0
    inbox.expire_gaps(now + 2.0)
    assert rec.failures(tracking.MissedDelivery) == 1
    # Reconciliation must not count it a second time, nor a late arrival.
    stored = [frame(i, tracking.compose("bob.1", i, 40)) for i in (1, 2, 3)]
    stored[1]["message"] = stored[1]["message"].replace(
        stored[1]["message"].split()[3], f"{(now - 5) * 1000:.3f}"
    )
    assert inbox.settle_against(stored, time.time() + 1) == 0
    inbox.deliver(frame(2, stored[1]["message"]), time.time())
    assert rec.failures(tracking.MissedDelivery) == 1
    assert rec.successes() == 2


def check_reconciliation_finds_the_tail() -> None:
    inbox, rec = make_inbox(timeout=1.0)
    inbox.joined([{"id": 10}])
    old = f"lt carol.1 1 {(time.time() - 5) * 1000:.3f} x"
    stored = [frame(9, old), frame(11, old), {"id": 12, "message": "a human", "timestamp": "x"}]
    assert inbox.settle_against(stored, time.time() + 1) == 2  # 11 and 12; 9 predates the join
    assert rec.failures(tracking.MissedDelivery) == 2


def check_in_flight_is_awaited() -> None:
    inbox, rec = make_inbox(timeout=5.0)
    inbox.joined([])
    fresh = frame(1, tracking.compose("dave.1", 1, 40))
    started = time.time()
    import gevent

    gevent.spawn_later(0.3, inbox.deliver, fresh, time.time() + 0.3)
    assert inbox.settle_against([fresh], time.time() + 3) == 0
    assert 0.2 < time.time() - started < 2.5
    assert rec.successes() == 1 and rec.failures(tracking.MissedDelivery) == 0


def check_late_is_a_failure() -> None:
    inbox, rec = make_inbox(timeout=1.0)
    inbox.joined([])
    late = f"lt erin.1 1 {(time.time() - 3) * 1000:.3f} x"
    inbox.deliver(frame(1, late), time.time())
    assert rec.failures(tracking.LateDelivery) == 1


if __name__ == "__main__":
    for name, check in sorted(globals().items()):
        if name.startswith("check_") and callable(check):
            check()
            print(f"ok {name}")
