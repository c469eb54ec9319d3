"""The fast paths realtime/ builds on library internals are the ones real daphne takes:
a refactor or an upgrade that quietly drops back to the slow path fails here."""

from __future__ import annotations

from .conftest import metric


async def test_fan_out_goes_through_the_servers_frame_writer(stack, tokens, clients, room):
    replica = stack.replica(1)
    before = {
        path: metric(replica.url, "chat_ws_fanout_writes_total", path=path)
        for path in ("direct", "send")
    }
    a = await clients.open(stack.ws_url(room, replica=1), tokens["user1"])
    b = await clients.open(stack.ws_url(room, replica=1), tokens["user2"])
    await a.say("one")
    await a.say("two")
    await b.until(lambda: len(b.messages) == 2, what="two messages")
    await a.until(lambda: len(a.messages) == 2, what="its own two messages")
    direct = metric(replica.url, "chat_ws_fanout_writes_total", path="direct")
    # Each message to both sockets (presence frames may add more), all written directly.
    assert direct >= before["direct"] + 4
    assert metric(replica.url, "chat_ws_fanout_writes_total", path="send") == before["send"]
