#!/usr/bin/env python
"""The benchmark's ceiling: the least a Python chat broadcast can do, on `websockets`.

No Django, no channel layer, no database, no authentication: one asyncio process keeps
each room's connections in a set, and for every `chat_message` it receives builds the
same frame the project sends (id, room, user, message, timestamp), serializes it once
and writes it to every connection of the room with `websockets.broadcast` (no awaiting,
no backpressure). On join it sends an empty `history` and a `user_list`, so the
measuring client treats it exactly like the project. What this process delivers per
second on this machine is the ceiling the project is compared with.

    python loadtests/bench/ceiling.py --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import signal
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

PREFIX = "/ws/chat/"
rooms: dict[str, set[ServerConnection]] = {}
ids = itertools.count(1)


def encode(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def room_of(path: str) -> str | None:
    path = path.partition("?")[0]  # `?v=2` (the storm's clients) changes nothing here
    if not path.startswith(PREFIX) or not path.endswith("/"):
        return None
    name = path[len(PREFIX) : -1]
    return name or None


def check_path(connection: ServerConnection, request: Request) -> Response | None:
    if room_of(request.path) is None:
        return connection.respond(404, "no such room\n")
    return None


async def handler(ws: ServerConnection) -> None:
    room = room_of(ws.request.path) if ws.request else None
    assert room is not None
    members = rooms.setdefault(room, set())
    members.add(ws)
    try:
        await ws.send(encode({"type": "history", "messages": [], "has_more": False}))
        await ws.send(encode({"type": "user_list", "users": []}))
        async for text in ws:
            try:
                frame = json.loads(text)
            except ValueError:
                continue
            if not isinstance(frame, dict) or frame.get("type") != "chat_message":
                continue
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            out = {
                "type": "chat_message",
                "id": next(ids),
                "room": room,
                "user": "anonymous",
                "message": str(frame.get("message", "")),
                "timestamp": now,
                "edited_at": None,
                "reactions": {},
            }
            broadcast(members, encode(out))
    finally:
        members.discard(ws)


async def main(port: int) -> None:
    # One file descriptor per socket: the storm holds thousands in this one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=check_path,
        compression=None,
        max_queue=None,
        # asyncio's default accept backlog (100) overflows in a join storm through nginx:
        # SYNs dropped and retried a second later would slow the ceiling, not Python.
        backlog=1024,
        ping_interval=20,
        ping_timeout=30,
    ):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
