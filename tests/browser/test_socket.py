"""room/socket.js on its own: the WebSocket client without the room page or any DOM.

The module is imported into a page of the site that does not load it (the room index)
and driven against a real replica: it connects, receives frames, and when the server
closes the socket it reconnects (by itself, or when told the network is back) and
resumes from where its owner says it is.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

ROOM = "wire"
# More than protocol.MAX_FRAME_BYTES (64 KiB): the server closes with 1009 unread.
OVERSIZED = 70_000

SETUP = """async (room) => {
  const { createSocket, socketUrl } = await import("/static/chat/room/socket.js");
  const seen = { frames: [], states: [], delays: [], closes: [], opens: 0, other: [] };
  let maxId = 0;
  let online = true;
  const record = (frame) => {
    seen.frames.push(frame);
    for (const m of frame.messages || []) maxId = Math.max(maxId, m.id);
    if (frame.type === "chat_message") maxId = Math.max(maxId, frame.id);
  };
  window.seen = seen;
  window.setOnline = (value) => { online = value; };
  window.url = socketUrl(room);
  window.client = createSocket({
    url: window.url,
    handlers: new Proxy({}, { get: () => record }),  // every frame type
    resumePoint: () => ({ after: maxId }),
    onState(state, info) {
      seen.states.push(info.reason ? `${state}:${info.reason}` : state);
      if (info.due !== undefined) seen.delays.push(info.due - Date.now());
    },
    onOpen: () => { seen.opens += 1; },
    onClose: (code) => seen.closes.push(code),
    isOnline: () => online,
  });
  window.client.connect();
  // A second client in the same page: each socket has its own state.
  window.other = createSocket({
    url: window.url,
    handlers: { chat_message: (frame) => seen.other.push(frame.message) },
  });
  window.other.connect();
}"""


def wait_for(page, condition: str) -> None:
    page.wait_for_function(f"() => {condition}")


def frames_since(page, index: int) -> list[dict]:
    return page.evaluate(f"window.seen.frames.slice({index})")


def test_socket_module_alone_connects_reconnects_and_resumes(people, chat_stack):
    chat_stack.seed({}, {ROOM: False})
    dave = people("dave", replica=1)
    page = dave.goto("/chat/")
    page.evaluate(SETUP, ROOM)
    assert page.evaluate("window.url").endswith(f"/ws/chat/{ROOM}/?v=2")

    # Connected means the server sent the room: the join history, then who is online.
    wait_for(page, "window.client.state === 'connected' && window.other.state === 'connected'")
    wait_for(page, "window.seen.frames.some((f) => f.type === 'user_list')")
    first = page.evaluate("window.seen.frames.map((f) => f.reason || f.type)")
    assert first[:2] == ["join", "user_list"]
    assert page.evaluate("window.seen.states") == ["connecting", "connected"]

    assert page.evaluate("window.client.send({type: 'chat_message', message: 'one'})")
    wait_for(page, "window.seen.frames.some((f) => f.message === 'one')")

    # The server closes the socket (a frame over its limit): the client comes back by
    # itself within the first backoff step (full jitter: 0–0.5 s), and resumes.
    mark = page.evaluate("window.seen.frames.length")
    page.evaluate(f"window.client.send({{type: 'chat_message', message: 'x'.repeat({OVERSIZED})}})")
    wait_for(page, "window.seen.closes.length === 1")
    wait_for(page, "window.seen.states.filter((s) => s === 'connected').length === 2")
    assert page.evaluate("window.seen.closes") == [1009]
    assert page.evaluate("window.seen.states")[2:] == ["reconnecting", "reconnecting", "connected"]
    (delay,) = page.evaluate("window.seen.delays")
    assert -50 <= delay <= 500
    wait_for(page, "window.seen.frames.some((f) => f.reason === 'resume')")
    again = frames_since(page, mark)
    assert [f.get("reason") for f in again if f["type"] == "history"] == ["join", "resume"]
    (resume,) = [f for f in again if f.get("reason") == "resume"]
    assert resume["messages"] == []

    # Closed again while "offline": no attempt until the network is back. What was said
    # meanwhile (by the page's other socket) comes with the resume, from the last id seen.
    page.evaluate("window.setOnline(false)")
    mark = page.evaluate("window.seen.frames.length")
    page.evaluate(f"window.client.send({{type: 'chat_message', message: 'x'.repeat({OVERSIZED})}})")
    wait_for(page, "window.seen.closes.length === 2")
    assert page.evaluate("window.seen.states.at(-1)") == "offline:network"
    assert page.evaluate("window.other.send({type: 'chat_message', message: 'while away'})")
    wait_for(page, "window.seen.other.includes('while away')")
    assert page.evaluate("window.client.state") == "offline"
    page.evaluate("window.setOnline(true); window.client.networkUp()")
    wait_for(page, f"window.seen.frames.some((f, i) => i >= {mark} && f.reason === 'resume')")
    (resume,) = [f for f in frames_since(page, mark) if f.get("reason") == "resume"]
    assert [m["message"] for m in resume["messages"]] == ["while away"]
    assert page.evaluate("window.seen.states.slice(-2)") == ["reconnecting", "connected"]
    assert page.evaluate("window.seen.opens") == 3

    # And it simply goes on.
    assert page.evaluate("window.client.send({type: 'chat_message', message: 'two'})")
    wait_for(page, "window.seen.other.includes('two')")
