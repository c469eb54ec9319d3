"""A client that reads too slowly (or not at all) costs a replica a bounded amount.

Whatever a socket cannot take waits in the replica (realtime/ws_protocol.py) up to
CHAT_WS_MAX_BUFFER (1 MiB here, the default); past it the replica stops queueing for that
socket, closes it with 4008 and frees the backlog, while everyone else in the room is
served as before. The client then reconnects and resumes, and has every message.
Separately, a few KB of `history` requests from a socket that never reads cannot make
the replica hold megabytes: a per-connection budget and byte-capped pages bound them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse

import pytest
import websockets

from .conftest import metric
from .test_topology import post_message

pytestmark = pytest.mark.stack

BODY = "é" * 1990  # ~4 KB of UTF-8 per frame
MAX_BUFFER = 1024 * 1024  # the default CHAT_WS_MAX_BUFFER, which the stack keeps
# What a replica may grow by while one socket misbehaves: its bounded backlog, plus the
# allocator's and the history pages' working memory. Unbounded, the same traffic grows it
# by tens of megabytes (the issue measured +300 MB for 200 history requests).
RSS_MARGIN = 24 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def stalled_socket(url: str) -> socket.socket:
    """A connected socket with a receive buffer of a few KB, set before the handshake so
    the window the server sees stays that small."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.setblocking(False)
    return sock


def post_all(stack, room: str, tokens: dict[str, str], texts: list[str]) -> list[int]:
    """Post each text through the API (several senders, waiting out a 429), in order."""
    senders = [tokens[f"user{n}"] for n in (1, 4, 5, 6)]
    ids = []
    for n, text in enumerate(texts):
        for _ in range(50):
            status, body = post_message(stack, room, senders[n % len(senders)], text)
            if status != 429:
                break
            time.sleep(0.2)
        assert status == 201, body
        ids.append(body["id"])
    return ids


async def until(check, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(every)


async def test_a_stalled_member_of_a_busy_room_is_closed_at_the_bound_then_resumes(
    stack, tokens, clients, room
):
    replica = stack.replica(1)
    url = stack.ws_url(room, replica=1)
    headers = {"Authorization": f"Bearer {tokens['user2']}"}
    # max_queue=1: the client stops reading from its socket after one frame it was not
    # asked for, so the replica's sends to it back up.
    slow = await websockets.connect(
        url, sock=stalled_socket(url), additional_headers=headers, max_queue=1, max_size=None
    )
    seen: dict[int, dict] = {}
    try:
        for _ in range(2):  # history, user_list
            json.loads(await slow.recv())
        fast = await clients.open(url, tokens["user3"], name="fast")
        slow_before = metric(replica.url, "chat_ws_slow_disconnects_total")
        rss_before = rss(replica.proc.pid)

        # About 7 MB of frames for the stalled socket, far past its 1 MiB and whatever the
        # kernel buffers (up to 4 MB): live messages, its own requests for history pages
        # (it asks, it does not read), then more live messages.
        texts = [f"{n} {BODY}" for n in range(400)]
        sent = await asyncio.to_thread(post_all, stack, room, tokens, texts[:200])
        for _ in range(20):
            await slow.send(json.dumps({"type": "resume", "after": 0}))
        sent += await asyncio.to_thread(post_all, stack, room, tokens, texts[200:])
        await until(
            lambda: metric(replica.url, "chat_ws_slow_disconnects_total") > slow_before,
            30,
            "the stalled socket closed as too slow",
        )
        peak = rss(replica.proc.pid) - rss_before
        assert peak < MAX_BUFFER + RSS_MARGIN, f"replica grew by {peak / 2**20:.1f} MiB"
        # The room went on for everyone else, at full speed.
        await fast.until(lambda: set(sent) <= set(fast.messages), 30, "all messages")
        assert not fast.closes

        # The stalled client reads what reached it, in order (so the live messages it got
        # are the first ones), then meets the end of the connection.
        with pytest.raises(websockets.ConnectionClosed) as ended:
            while True:
                frame = json.loads(await asyncio.wait_for(slow.recv(), 15))
                if frame["type"] == "chat_message":
                    seen[frame["id"]] = frame
        assert ended.value.rcvd is None or ended.value.rcvd.code == 4008
        assert len(seen) < len(sent), "it was closed before it had everything"
    finally:
        await slow.close()

    # Reconnect and resume from the last message it saw: no gap, nothing twice.
    again = await clients.open(url, tokens["user2"], name="resumed")
    await again.resume(max(seen, default=0))  # page by page
    assert set(seen) | set(again.messages) >= set(sent)
    assert [again.messages[i]["message"] for i in sent if i not in seen] == [
        texts[n] for n, i in enumerate(sent) if i not in seen
    ]


async def test_history_requests_from_a_socket_that_never_reads_stay_bounded(
    stack, tokens, clients, room
):
    """The issue's amplification: 200 history requests (7 KB) for a room of long messages,
    from an anonymous socket that never reads. The pages it asked for pass its 1 MiB after a
    few, and it is closed (the per-connection budget that caps the requests themselves is
    tested in tests/core/test_consumer.py)."""
    replica = stack.replica(1)
    url = stack.ws_url(room, replica=1)
    member = await clients.open(url, tokens["user2"])  # a member's first visit creates it
    await asyncio.to_thread(post_all, stack, room, tokens, [f"{n} {BODY}" for n in range(120)])
    slow_before = metric(replica.url, "chat_ws_slow_disconnects_total")
    rss_before = rss(replica.proc.pid)
    attacker = await websockets.connect(url, sock=stalled_socket(url), max_queue=1, max_size=None)
    try:
        for _ in range(200):
            await attacker.send(json.dumps({"type": "history", "limit": 100}))
        await until(
            lambda: metric(replica.url, "chat_ws_slow_disconnects_total") > slow_before,
            30,
            "the socket closed as too slow",
        )
        grown = rss(replica.proc.pid) - rss_before
        assert grown < MAX_BUFFER + RSS_MARGIN, f"replica grew by {grown / 2**20:.1f} MiB"
    finally:
        await attacker.close()
    # The replica serves as before.
    sent = await member.say("still serving")
    assert sent["message"] == "still serving"
