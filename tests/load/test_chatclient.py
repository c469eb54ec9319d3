"""The shared protocol client's decisions (loadtests/chatclient/protocol.py), no server:
what every client — stack tests, benchmark, Locust users — does on a greeting, a close
and a reconnect."""

from __future__ import annotations

import time

from loadtests.chatclient import protocol
from loadtests.chatclient.protocol import Backoff, Session

NO_JITTER = Backoff(base=1.0, cap=4.0, jitter=0.0, hint_jitter=0.0, retry_jitter=0.0)


def join(session: Session, ids: list[int], users: list[str]) -> None:
    session.receive({"type": "history", "messages": [{"id": i} for i in ids], "reason": "join"}, 0)
    session.receive({"type": "user_list", "users": users}, 0)


def test_urls_and_frames():
    assert protocol.room_url("http://h:8080/", "lobby") == "ws://h:8080/ws/chat/lobby/?v=2"
    assert protocol.room_url("https://h", "r", version=None) == "wss://h/ws/chat/r/"
    assert protocol.with_version("ws://h/ws/chat/r/?x=1") == "ws://h/ws/chat/r/?x=1&v=2"
    assert protocol.auth_headers("") == {}
    assert protocol.encode(protocol.chat_message("é")) == '{"type": "chat_message", "message": "é"}'
    assert protocol.decode('{"type": "pong"}') == {"type": "pong"}
    for bad in ("[1]", "nope"):
        try:
            protocol.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_a_reconnect_resumes_and_pages_from_each_page_end():
    session = Session(NO_JITTER, users=True)
    assert session.opened() is None  # a first connection has nothing to resume
    join(session, [3, 7], ["alice", "bob"])
    assert session.joined and session.last_id == 7 and session.users == {"alice", "bob"}
    session.receive({"type": "chat_message", "id": 9}, 0)
    session.receive({"type": "presence", "joins": ["carol"], "leaves": ["bob"], "total": 2}, 0)
    assert session.users == {"alice", "carol"}

    assert session.closed(1012, "retry_after_ms=1500") == 1.5
    assert session.opened() == {"type": "resume", "after": 9}
    join(session, [8, 9], ["alice"])
    session.receive({"type": "chat_message", "id": 40}, 0)  # live, newer than any page
    page = {"type": "history", "reason": "resume", "has_more": True, "messages": [{"id": 10}]}
    assert session.receive(page, 0) == {"type": "resume", "after": 10}
    last = {"type": "history", "reason": "resume", "has_more": False, "messages": [{"id": 11}]}
    assert session.receive(last, 0) is None and not session.resuming
    assert session.last_id == 40


def test_which_closes_bring_a_client_back_and_when():
    session = Session(NO_JITTER)
    session.opened()
    join(session, [], [])
    assert session.closed(1000) is None  # a normal close: stay away
    session.opened()
    join(session, [], [])
    assert session.closed(1012) == 1.0  # no hint: the backoff's first step
    session.opened()  # refused before joining: its retry_after wins
    session.receive({"type": "error", "code": "overloaded", "retry_after": 3}, 0)
    assert session.closed(1013) == 3.0
    session.opened()
    session.receive({"type": "error", "code": "rate_limited", "limit": "ws_user"}, 0)
    assert session.closed(4429) is None  # no retry_after, not a come-back code
    assert session.failed() == 4.0  # the steps grow to the cap
    # A rate_limited error on a joined socket is about a send, not about reconnecting.
    session.opened()
    join(session, [], [])
    session.receive({"type": "error", "code": "rate_limited", "retry_after": 9}, 0)
    assert session.closed(1006) == 1.0


def test_backoff_jitter_stays_within_its_bounds():
    full, equal = Backoff(base=0.5, cap=8.0), Backoff(base=0.5, cap=8.0, jitter=0.5)
    for attempt in range(8):
        step = min(8.0, 0.5 * 2**attempt)
        assert 0 <= full.step(attempt) <= step
        assert step / 2 <= equal.step(attempt) <= step
    storm = Backoff(base=0.75, cap=0.75, floor=0.25, hint_jitter=0.25)
    assert all(0.25 <= storm.step(a) <= 1.0 for a in range(20))
    assert 2.0 <= storm.delay(0, 1012, "retry_after_ms=2000") <= 2.25


def test_a_refused_handshake_is_retried_after_its_retry_after():
    """Every replica busy: nginx passes on the last 503, whose Retry-After the client
    honours as it does an `overloaded` frame's retry_after (docs/protocol.md)."""
    from email.utils import formatdate

    retry_after = protocol.handshake_retry_after
    assert retry_after(503, {"Retry-After": "7"}) == 7.0
    assert retry_after(429, {"retry-after": " 2 "}) == 2.0  # header names in any case
    assert retry_after(503, {"Retry-After": "86400"}) == protocol.RETRY_AFTER_CAP
    in_a_while = retry_after(503, {"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    assert in_a_while is not None and 25 <= in_a_while <= 30
    assert retry_after(503, {"Retry-After": formatdate(0, usegmt=True)}) == 0.0  # past
    assert retry_after(503, {}) is None and retry_after(503, {"Retry-After": "soon"}) is None
    assert retry_after(502, {"Retry-After": "3"}) is None  # not a "come back later"

    session = Session(NO_JITTER)
    assert session.failed(6.0) == 6.0  # the server's word, not the backoff's
    assert session.failed() == 4.0  # a failure without one: the backoff, grown to its cap
