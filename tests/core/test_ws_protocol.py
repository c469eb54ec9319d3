"""The replicas' own framing (realtime/frames.py), read back by another implementation.

The stack, browser and load suites send every frame through it to real clients; this
pins the length encodings at their boundaries.
"""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from realtime.frames import frame, text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        assert reader.at_eof(), "bytes left over after the frame"
        return done.value
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_frames_of_every_length_encoding_parse_back(size, opcode):
    payload = (b"\xc3\xa9" * size)[:size] if opcode is Opcode.BINARY else b"x" * size
    parsed = parse(frame(opcode.value, payload))
    assert (parsed.opcode, parsed.fin, parsed.data) == (opcode, True, payload)
    assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)


def test_a_text_frame_is_framed_once_and_parses_back():
    framed = text_frame("héllo ✓")
    assert framed.size == len("héllo ✓".encode())
    assert parse(framed.wire).data.decode() == "héllo ✓"


async def test_the_server_hands_each_websocket_its_frame_writer_through_the_scope(settings):
    """The seam is explicit: our daphne Server puts the protocol's writer in the scope's
    ASGI extensions; with the fast path off (or under another server) it is absent, and
    fan-out then uses `send`."""
    import asyncio

    from realtime.asgi_send import FRAME_WRITER, frame_writer
    from realtime.daphne_server import DrainingServer
    from realtime.ws_protocol import ChatWebSocketProtocol

    scopes = []

    def app(scope, receive, send):
        scopes.append(scope)
        return asyncio.sleep(0)

    server = DrainingServer(application=app, endpoints=["tcp:port=0"], drain_timeout=1.0)
    server.connections = {}  # what run() starts with
    ours = ChatWebSocketProtocol()
    server.connections[ours] = {}
    server.create_application(ours, {"type": "websocket", "extensions": {"other": {}}})
    assert scopes[-1]["extensions"]["other"] == {}  # what was there stays
    assert frame_writer(scopes[-1]) == ours.write_frame

    settings.CHAT_FAST_PATHS_OFF = frozenset({"direct_writer"})
    other = ChatWebSocketProtocol()
    server.connections[other] = {}
    server.create_application(other, {"type": "websocket"})
    assert FRAME_WRITER not in scopes[-1].get("extensions", {})
    assert frame_writer(scopes[-1]) is None
    await asyncio.gather(*(server.connections[p]["application_instance"] for p in (ours, other)))


def test_autobahns_per_connection_debug_lines_are_formatted_only_when_rendered():
    """realtime/ws_protocol.py makes autobahn's module-level pformat lazy: it must still be
    what autobahn calls on every connection (else the patch is dead weight: drop it)."""
    import inspect

    from autobahn.websocket import protocol as autobahn_protocol

    from realtime.ws_protocol import LazyFormat, quiet_debug_formatting

    quiet_debug_formatting()  # what the server does at start (fast path quiet_autobahn)

    made = inspect.getsource(autobahn_protocol.WebSocketProtocol._connectionMade)
    assert "pformat(configAttrLog)" in made, "autobahn changed its per-connection log"
    assert autobahn_protocol.pformat is LazyFormat

    rendered = []

    class Spy:
        def __repr__(self) -> str:
            rendered.append(True)
            return "spy"

    lazy = autobahn_protocol.pformat([Spy()])
    assert rendered == []  # nothing formatted until a log observer renders it
    assert f"{lazy}" == "[spy]" and str(lazy) == "[spy]" and rendered
    timings = autobahn_protocol.Timings()
    timings.track("start")
    assert isinstance(str(timings), str) and "start" in str(timings)


def test_a_denial_response_is_one_whole_http_response_and_unsafe_headers_are_refused():
    """realtime/ws_protocol.py's denial response: what the application sent, with the
    length and the close it implies; nothing that could break the header block."""
    from realtime.ws_protocol import Denial

    denial = Denial({"status": 503, "headers": [(b"retry-after", b"3")]})
    denial.body = b'{"a":1}'
    assert denial.wire() == (
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\n"
        b"Content-Length: 7\r\nConnection: close\r\n\r\n"
        b'{"a":1}'
    )
    for bad in (
        {"status": 101},
        {"status": "503"},
        {"status": 503, "headers": [("retry-after", b"3")]},
        {"status": 503, "headers": [(b"retry-after", b"3\r\nSet-Cookie: x=1")]},
        {"status": 503, "headers": [(b"retry after", b"3")]},
    ):
        with pytest.raises(ValueError):
            Denial(bad)
