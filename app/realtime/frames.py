"""A server's WebSocket frames (RFC 6455 §5.2), built without any server library.

The hub (chat/services/fanout.py) frames a fan-out message once for all its sockets;
realtime/ws_protocol.py writes the bytes. Nothing here imports Twisted, so web processes
and tests may use it without installing a reactor.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (a server's): FIN + opcode, then the payload length."""
    size = len(payload)
    if size <= 125:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


@dataclass(frozen=True, slots=True)
class TextFrame:
    """A text message framed once for every socket of a fan-out."""

    text: str
    wire: bytes
    size: int  # payload bytes


def text_frame(text: str) -> TextFrame:
    payload = text.encode()
    return TextFrame(text, frame(0x1, payload), len(payload))
