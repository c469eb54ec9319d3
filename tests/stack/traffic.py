"""Traffic for the outage tests: an integration posting through the HTTP API, and what
the room stored, read back page by page."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

from localstack.stack import Stack, http_get

from .test_topology import post_message


class ApiSender:
    """Posts to a room at a steady rate through nginx, as an integration would: a post
    refused with 503 `unavailable` is sent again until it is accepted, anything else
    fails the test. Keeps when each post was accepted or refused (time.monotonic())."""

    def __init__(self, stack: Stack, room: str, token: str, interval: float = 0.2):
        self.stack = stack
        self.room = room
        self.token = token
        self.interval = interval
        self.accepted: list[tuple[float, int]] = []  # (when, message id)
        self.refused: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def ids(self) -> set[int]:
        return {message_id for _, message_id in self.accepted}

    def start(self) -> ApiSender:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Finish the post under way (until accepted), then stop."""
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            await self._post_until_accepted(f"{self.room} #{n}")
            n += 1
            await asyncio.sleep(self.interval)

    async def _post_until_accepted(self, text: str) -> None:
        while True:
            status, body = await asyncio.to_thread(
                post_message, self.stack, self.room, self.token, text
            )
            if status == 201:
                self.accepted.append((time.monotonic(), body["id"]))
                return
            assert status == 503 and body["error"]["code"] == "unavailable", (status, body)
            self.refused.append(time.monotonic())
            await asyncio.sleep(self.interval)

    async def until_accepted(self, count: int, after: float = 0.0, timeout: float = 30) -> None:
        """Wait until `count` posts were accepted after `after` (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while sum(1 for when, _ in self.accepted if when > after) < count:
            assert self._task is not None
            if self._task.done():
                self._task.result()  # its assertion, if that is why it ended
            assert time.monotonic() < deadline, (
                f"{self.room}: {count} posts not accepted within {timeout} s; "
                f"refused {len(self.refused)}"
            )
            await asyncio.sleep(0.05)

    def back_after(self, since: float) -> float:
        """Seconds from `since` until a post was accepted after the last refusal."""
        last_refusal = max([since, *self.refused])
        return min(when for when, _ in self.accepted if when > last_refusal) - since


def stored_ids(stack: Stack, room: str) -> set[int]:
    """Every message id the room holds, through the HTTP API's forward pages."""
    found: list[int] = []
    after = 0
    while True:
        url = f"{stack.url}/api/rooms/{urllib.parse.quote(room)}/messages?limit=100&after={after}"
        status, body = http_get(url)
        assert status == 200, body[:300]
        page = json.loads(body)
        found += [m["id"] for m in page["messages"]]
        if not page["has_more"] or not page["messages"]:
            return set(found)
        after = page["messages"][-1]["id"]
