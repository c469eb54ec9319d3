"""daphne's Server with a drain, the chat's protocol and a frame-writer seam.

Tracks daphne 4.2 (`Server.run`'s factories, `Server.connections`,
`Server.create_application`, `Server.kill_all_applications`) and Twisted's asyncio
reactor (`reactor._asyncioEventloop`); realtime/pins.py checks both. Public seams that
would replace it upstream: a drain hook in daphne's Server and a protocol-class option.

Draining: stop accepting, mark /readyz 503, close every WebSocket with 1012 (service
restart) so clients reconnect elsewhere and `resume`, let each consumer run its
disconnect (presence leave), then exit; at the latest after CHAT_DRAIN_TIMEOUT.
The closes are spread over CHAT_DRAIN_SPREAD seconds, in batches a tenth of a second
apart, in random order, and each close frame's reason is a reconnect delay hint,
`retry_after_ms=<n>`, drawn at random within the gap to the next batch: the replica's
clients arrive on the others at an even rate instead of all at once.
A second signal exits at once. Whatever hangs (a consumer blocked in a database call
cannot be cancelled), a watchdog ends the process HARD_EXIT_GRACE seconds later.

daphne's WebSocket protocol is swapped for realtime/ws_protocol.py's, which can send the
registered close codes (1012, 1013, …) and writes frames without a loop pass each; each
WebSocket's scope then carries that protocol's frame writer as an ASGI extension
(FRAME_WRITER), so the application uses it without knowing how daphne builds `send`, and
ASGI's denial-response extension (DENIAL_RESPONSE), which that protocol implements: a
handshake can be refused with an HTTP response of the application's own (admission
control's 503 with Retry-After, which nginx passes on to another replica).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable

from daphne.server import Server  # first: installs the asyncio Twisted reactor
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer, reactor

from chat.protocol import closes

from . import fast_paths
from .asgi_send import FRAME_WRITER
from .ws_protocol import DENIAL_RESPONSE, ChatWebSocketProtocol, quiet_debug_formatting

log = logging.getLogger("chat.ws")

# Seconds past the drain timeout before the process exits no matter what.
HARD_EXIT_GRACE = 10.0
# Seconds the reactor's shutdown waits for cancelled consumers.
SHUTDOWN_WAIT = 2.0
# Seconds between two batches of a drain's closes.
DRAIN_BATCH_INTERVAL = 0.1
# Window of the reconnect hints when the closes are not spread (CHAT_DRAIN_SPREAD=0).
UNSPREAD_HINT_WINDOW = 1.0


def drain_batches(count: int, spread: float) -> list[tuple[float, int, int]]:
    """(seconds from the drain's start, first index, end index) of each batch of closes:
    `count` sockets in batches DRAIN_BATCH_INTERVAL apart (fewer if there are fewer
    sockets), evenly over `spread` seconds; the last starts one gap before its end."""
    batches = max(1, min(count, int(spread / DRAIN_BATCH_INTERVAL)))
    return [
        (spread * k / batches, count * k // batches, count * (k + 1) // batches)
        for k in range(batches)
    ]


def retry_hint(window: float) -> str:
    """A close reason telling a client to wait a random part of `window` seconds."""
    return f"retry_after_ms={round(random.uniform(0, window) * 1000)}"


class DrainingServer(Server):
    """daphne's Server with a drain: see the module docstring."""

    def __init__(self, *args, drain_timeout: float, drain_spread: float = 0.0, **kwargs):
        super().__init__(*args, ready_callable=self._before_reactor, **kwargs)
        self.drain_timeout = drain_timeout
        self.drain_spread = drain_spread
        self.hint_window = UNSPREAD_HINT_WINDOW
        self.closes_due = 0.0  # seconds into the drain when the last batch is closed
        self.ports: list = []
        self.drain_started: float | None = None
        self.listen_failed = False
        self._closed: set = set()

    def _before_reactor(self) -> None:
        # run() has built its factories and the reactor has not accepted anything yet.
        self.ws_factory.protocol = ChatWebSocketProtocol
        ChatWebSocketProtocol.writes_now = fast_paths.on("write_now")
        if fast_paths.on("quiet_autobahn"):
            quiet_debug_formatting()
        # A refused frame (over websocket_max_message_size, a protocol error) gets a close
        # frame with its code (1009, 1002…) instead of a silently dropped TCP connection.
        self.ws_factory.setProtocolOptions(failByDrop=False)

    def create_application(self, protocol, scope):
        if isinstance(protocol, ChatWebSocketProtocol):
            extensions = {**scope.get("extensions", {}), DENIAL_RESPONSE: {}}
            if fast_paths.on("direct_writer"):
                extensions[FRAME_WRITER] = {"write": protocol.write_frame}
            scope["extensions"] = extensions
        return super().create_application(protocol, scope)

    def serve(self, on_start: Callable[[], None]) -> None:
        """Run until drained: SIGTERM or SIGINT starts the drain, a second one stops at
        once; `on_start` runs once the reactor does."""

        def on_signal(signum, frame):
            reactor.callFromThread(self.drain)

        def started():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            on_start()

        reactor.callWhenRunning(started)
        self.run()

    def listen_success(self, port):
        super().listen_success(port)
        self.ports.append(port)

    def listen_error(self, failure):
        self.listen_failed = True
        super().listen_error(failure)

    def _open_websockets(self) -> list:
        return [p for p in self.connections if isinstance(p, WebSocketProtocol)]

    def _running(self) -> list[str]:
        """What still runs: one short description per live application instance."""
        found = []
        for protocol, details in self.connections.items():
            task = details.get("application_instance")
            if task is not None and not task.done():
                state = getattr(protocol, "state", None)
                where = " < ".join(reversed(_awaiting(task.get_coro())[-8:]))
                found.append(
                    f"{type(protocol).__name__}(state={state}, "
                    f"disconnected={'disconnected' in details}, at {where})"
                )
        for task in asyncio.all_tasks(reactor._asyncioEventloop):
            if task.cancelling():
                found.append("cancelling: " + " < ".join(reversed(_awaiting(task.get_coro()))))
        return found

    def _close_websockets(self) -> int:
        """Close every open WebSocket not yet told (or scheduled) to go, with 1012 and a
        reconnect hint: the handshakes that complete during the drain."""
        late = self._not_closed()
        self._close_batch(late)
        return len(late)

    def _not_closed(self) -> list:
        found = [
            p for p in self._open_websockets() if p.state == p.STATE_OPEN and p not in self._closed
        ]
        self._closed.update(found)
        return found

    def _close_batch(self, protocols: list) -> None:
        for protocol in protocols:
            if protocol.state == protocol.STATE_OPEN:
                protocol.serverClose(
                    code=closes.SERVICE_RESTART, reason=retry_hint(self.hint_window)
                )

    def _schedule_closes(self) -> int:
        """Close the open WebSockets in random order, in batches over the spread."""
        sockets = self._not_closed()
        random.shuffle(sockets)
        batches = drain_batches(len(sockets), self.drain_spread)
        if self.drain_spread > 0:
            self.hint_window = self.drain_spread / len(batches)
        for delay, start, end in batches:
            if delay == 0:
                self._close_batch(sockets[start:end])
            else:
                reactor.callLater(delay, self._close_batch, sockets[start:end])
        self.closes_due = batches[-1][0]
        return len(sockets)

    def drain(self) -> None:
        from chat import health

        if self.drain_started is not None:
            log.warning("second signal: stopping now")
            self.stop()
            return
        self.drain_started = time.monotonic()
        health.draining = True
        # Last resort: whatever hangs (a consumer stuck in a database call, a shutdown
        # hook), the process is gone shortly after the drain timeout.
        _exit_after(self.drain_timeout + HARD_EXIT_GRACE, "drain did not finish")
        for port in self.ports:
            port.stopListening()
        closing = self._schedule_closes()
        log.warning(
            "draining: stopped listening, closing %d WebSockets with %d over %.1f s",
            closing,
            closes.SERVICE_RESTART,
            self.closes_due,
        )
        self._wait_drained()

    def _wait_drained(self) -> None:
        elapsed = time.monotonic() - self.drain_started
        # A handshake that was in flight when the drain began is accepted afterwards:
        # close it too rather than let it hold the drain open.
        self._close_websockets()
        running = self._running()
        if (not running and elapsed >= self.closes_due) or elapsed >= self.drain_timeout:
            if running:
                log.warning(
                    "drain timeout: %d connections still open (%s); stopping",
                    len(running),
                    ", ".join(running[:8]),
                )
            else:
                log.info("drained in %.2f s", elapsed)
            self.stop()
            return
        reactor.callLater(0.05, self._wait_drained)

    def kill_all_applications(self):
        """Cancel what still runs, and wait for it only briefly.

        daphne's own version assumes every connection has an application instance (an
        HTTP connection between requests has none) and waits without limit, while a
        consumer cancelled inside a database call only finishes when the call returns.
        """
        pending = [
            details["application_instance"]
            for details in self.connections.values()
            if details.get("application_instance") is not None
            and not details["application_instance"].done()
        ]
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d application instances", len(pending))
        waiting = defer.Deferred.fromFuture(asyncio.gather(*pending, return_exceptions=True))
        waiting.addTimeout(SHUTDOWN_WAIT, reactor)
        waiting.addErrback(lambda _: None)
        waiting.addCallback(lambda _: close_loop_resources())
        return waiting


def close_loop_resources() -> defer.Deferred:
    """Close the loop's pools and clients (chat/runtime.py) once the consumers are done,
    on the loop, before the reactor stops it: PostgreSQL and Redis see them ended, not
    dropped. Bounded, like the wait for the consumers."""
    from chat import runtime

    def done(closed: list[str]) -> None:
        log.info("closed the event loop's clients: %s", ", ".join(closed) or "none")

    closing = defer.Deferred.fromFuture(asyncio.ensure_future(runtime.close_loop()))
    closing.addTimeout(SHUTDOWN_WAIT, reactor)
    closing.addCallbacks(done, lambda f: log.warning("closing the loop's clients: %r", f.value))
    return closing


def _awaiting(coro) -> list[str]:
    """`function:line` of each coroutine in an await chain, outermost first."""
    chain = []
    while coro is not None and len(chain) < 40:
        if isinstance(coro, asyncio.Task):  # an awaited task: follow it too
            coro = coro.get_coro()
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def _exit_after(seconds: float, why: str) -> None:
    """Exit the process after `seconds` from a daemon thread, whatever the loop is doing."""

    def hard_exit() -> None:
        log.error("%s within %.0f s: exiting now", why, seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()
