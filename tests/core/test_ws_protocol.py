"""The replicas' own framing (config/ws_protocol.py), read back by another implementation.

The stack, browser and load suites send every frame through it to real clients; this
pins the length encodings at their boundaries.
"""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from config.ws_protocol import frame


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


def test_fan_out_writes_directly_only_through_a_protocol_that_offers_it():
    """daphne's send is partial(Server.handle_reply, protocol): the hub writes through
    the protocol's write_text when it has one, and through `send` otherwise."""
    import functools

    from daphne.server import Server

    from chat.server_send import direct_writer
    from config.ws_protocol import ChatWebSocketProtocol

    server = Server.__new__(Server)  # only its bound handle_reply is needed
    ours = ChatWebSocketProtocol()
    assert direct_writer(functools.partial(server.handle_reply, ours)) == ours.write_text

    class Plain:  # daphne's own protocol, or any other server
        pass

    assert direct_writer(functools.partial(server.handle_reply, Plain())) is None

    async def send(message):  # channels' test communicator, a middleware's wrapper
        pass

    assert direct_writer(send) is None


def test_autobahns_per_connection_debug_lines_are_formatted_only_when_rendered():
    """config/ws_protocol.py makes autobahn's module-level pformat lazy: it must still be
    what autobahn calls on every connection (else the patch is dead weight: drop it)."""
    import inspect

    from autobahn.websocket import protocol as autobahn_protocol

    from config.ws_protocol import LazyFormat

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
