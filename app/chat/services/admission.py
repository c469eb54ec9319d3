"""Admission control of one ws process: joins in progress and open connections.

A join is a consumer's connect() until its greeting (history, user_list) is sent; it
costs a session look-up, a room look-up, a history query and presence writes. Past
CHAT_WS_MAX_HANDSHAKES joins in progress, or CHAT_WS_MAX_CONNECTIONS sockets, a new
socket is refused at once — before any database or Redis work — as `overloaded` with a
`retry_after` in seconds: an HTTP 503 with Retry-After before the upgrade, which nginx
passes on to another replica (chat/admission_gate.py). A refusal costs almost nothing, so
a join storm goes to the replicas with room, and queues in the clients (which wait as
told) only when all are busy, instead of past daphne's handshake timeout, where nginx
would see resets and mark the replica down.

Counting is per process, in memory, on the event loop's thread (no lock needed). A
`Slot` gives back what it holds exactly once, however often it is released, so the
consumer can release it from every way out (connect's end, disconnect, `__call__`'s
finally) without a leak or a double count. 0 turns a limit off.
"""

from __future__ import annotations

import random

from django.conf import settings

from .. import metrics
from ..protocol.errors import ChatError

# Whole seconds a refused client is told to wait (as every `retry_after`), drawn at
# random in these ranges so refused clients do not come back together (the browser adds
# up to a second of its own): a queue of joins drains in a second or two; a full process
# frees sockets only as clients leave (or the connection autoscaler adds pods).
RETRY_AFTER = {"handshakes": (1, 4), "connections": (5, 15)}


class Overloaded(ChatError):
    """A socket refused by admission control; `retry_after` is in seconds."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__("overloaded", f"This server is busy; try again in {retry_after} s.")
        self.reason = reason
        self.retry_after = retry_after

    def as_frame(self, for_type: str | None = None, client_id: str | None = None) -> dict:
        frame = super().as_frame(for_type, client_id)
        frame["retry_after"] = self.retry_after
        return frame


class Slot:
    """One admitted socket: a join in progress until `joined()`, a connection until
    `release()`. Both are idempotent."""

    __slots__ = ("_gate", "held", "joining")

    def __init__(self, gate: Gate):
        self._gate = gate
        self.joining = True
        self.held = True

    def joined(self) -> None:
        """The join is over (greeting sent, or the socket refused for another reason)."""
        if self.joining:
            self.joining = False
            self._gate.joining -= 1
            metrics.WS_JOINING.dec()

    def release(self) -> None:
        """The socket is gone: give back its join (if still in progress) and connection."""
        self.joined()
        if self.held:
            self.held = False
            self._gate.connections -= 1


class Gate:
    def __init__(self) -> None:
        self.joining = 0
        self.connections = 0

    def admit(self) -> Slot:
        """A slot for a new socket, or Overloaded. Touches nothing but this object."""
        max_connections = settings.CHAT_WS_MAX_CONNECTIONS
        max_handshakes = settings.CHAT_WS_MAX_HANDSHAKES
        if max_connections and self.connections >= max_connections:
            raise self._refusal("connections")
        if max_handshakes and self.joining >= max_handshakes:
            raise self._refusal("handshakes")
        self.joining += 1
        self.connections += 1
        metrics.WS_JOINING.inc()
        return Slot(self)

    @staticmethod
    def _refusal(reason: str) -> Overloaded:
        metrics.ADMISSION_REFUSALS.labels(reason).inc()
        low, high = RETRY_AFTER[reason]
        return Overloaded(reason, random.randint(low, high))


_gate = Gate()


def gate() -> Gate:
    """This process's gate."""
    return _gate
