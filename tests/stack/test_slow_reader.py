"""A client that stops reading must not lose frames, reorder them or stall anyone else.

A replica writes a frame straight to the socket while nothing is queued for it
(config/ws_protocol.py) and leaves the rest to Twisted's buffer once the socket is full.
A reader that stops, with a tiny receive buffer, then asks for more history than the
kernel will hold for it (its send buffer grows to 4 MB) makes that switch happen mid-frame.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse

import pytest
import websockets

from localstack.stack import http_get

from .conftest import metric
from .test_topology import post_message

pytestmark = pytest.mark.stack

MESSAGES = 120
RESUMES = 24  # each a ~480 KB history frame: well past what the kernel buffers (4 MB)
BODY = "é" * 1990  # ~4 KB of UTF-8 per frame: the stalled socket fills after a few


async def until_metric_rises(url: str, name: str, above: float, timeout: float = 30) -> None:
    """The replica answers the resumes in turn; under load the socket fills a while later."""
    deadline = time.monotonic() + timeout
    while metric(url, name) <= above:
        assert time.monotonic() < deadline, f"{name} stayed at {above} for {timeout} s"
        await asyncio.sleep(0.2)


def stalled_socket(url: str) -> socket.socket:
    """A connected socket with a receive buffer of a few KB, set before the handshake so
    the window the server sees stays that small."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.setblocking(False)
    return sock


async def test_a_stalled_reader_gets_every_frame_whole_and_in_order(stack, tokens, clients, room):
    url = stack.ws_url(room, replica=1)
    headers = {"Authorization": f"Bearer {tokens['user2']}"}
    # max_queue=1: the client stops reading from its socket after one frame it was not
    # asked for, so the replica's sends to it back up.
    slow = await websockets.connect(
        url, sock=stalled_socket(url), additional_headers=headers, max_queue=1, max_size=None
    )
    try:
        greeting = [json.loads(await slow.recv()) for _ in range(2)]
        assert {frame["type"] for frame in greeting} == {"history", "user_list"}
        fast = await clients.open(url, tokens["user3"], name="fast")

        sent = []
        for n in range(MESSAGES):
            status, body = post_message(stack, room, tokens["user1"], f"{n} {BODY}")
            assert status == 201, body
            sent.append(body["id"])
        queued_before = metric(stack.replica(1).url, "chat_ws_frames_queued_total")
        for _ in range(RESUMES):
            await slow.send(json.dumps({"type": "resume", "after": 0}))
        # The stalled socket fills: frames wait in the replica (the path under test) ...
        await until_metric_rises(stack.replica(1).url, "chat_ws_frames_queued_total", queued_before)
        # ... while others on the same replica are still served.
        status, body = post_message(stack, room, tokens["user1"], f"{MESSAGES} {BODY}")
        assert status == 201, body
        sent.append(body["id"])
        await fast.until(lambda: set(sent) <= set(fast.messages), what="all messages", timeout=30)
        assert http_get(stack.replica(1).url + "/readyz")[0] == 200

        live, pages = [], []
        while len(pages) < RESUMES or len(live) < len(sent):
            frame = json.loads(await asyncio.wait_for(slow.recv(), 30))
            if frame["type"] == "chat_message":
                live.append(frame)
            elif frame["type"] == "history":
                pages.append(frame["messages"])
            elif frame["type"] not in ("user_join", "user_leave"):
                raise AssertionError(f"unexpected frame {frame['type']}: {frame}")
        expected = [f"{n} {BODY}" for n in range(len(sent))]
        assert [f["id"] for f in live] == sent
        assert [f["message"] for f in live] == expected
        for page in pages:  # each from before or after the last message was stored
            assert [m["id"] for m in page] == sent[: len(page)]
            assert [m["message"] for m in page] == expected[: len(page)]
            assert len(page) >= MESSAGES
    finally:
        await slow.close()
