"""What realtime/ leans on, pinned: each library's version, and the source of every
upstream function a module here copies, overrides, or depends on the internals of.

tests/core/test_realtime_pins.py fails with "re-sync …" when an upgrade changes one:
read the new upstream source, port the change into the module named, then record the
new fingerprints (`python app/realtime/pins.py` prints them). pyproject.toml pins the
same versions, so an upgrade is always a deliberate edit there first.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version

# distribution -> the release line the modules here were written against.
VERSIONS = {
    "daphne": "4.2",
    "autobahn": "26.10",
    "twisted": "26.10",
    "channels": "4.3",
    "channels-redis": "4.3",
}

# "module:qualified.name" -> (the realtime module that depends on it, fingerprint).
SOURCES: dict[str, tuple[str, str]] = {
    # daphne: the drain, the frame-writer extension, the protocol swap.
    "daphne.server:Server.create_application": ("daphne_server.py", "73e580441fd6c219"),
    "daphne.server:Server.kill_all_applications": ("daphne_server.py", "9f2096650d576f2c"),
    "daphne.server:Server.run": ("daphne_server.py", "c4add0a46711e7d4"),
    "daphne.server:Server.handle_reply": ("asgi_send.py", "d27da2aba8102e76"),
    "daphne.ws_protocol:WebSocketProtocol.serverSend": ("ws_protocol.py", "a61e325ae8e73cee"),
    "daphne.ws_protocol:WebSocketProtocol.serverClose": ("ws_protocol.py", "fc306e9a11de4253"),
    # daphne: the denial response, handled beside its own messages, refused its way.
    "daphne.ws_protocol:WebSocketProtocol.handle_reply": ("ws_protocol.py", "d0d43d9054315840"),
    "daphne.ws_protocol:WebSocketProtocol.serverReject": ("ws_protocol.py", "85c6943d8dee8fa0"),
    # autobahn: framing and close codes done here, the lazy debug text.
    "autobahn.websocket.protocol:WebSocketProtocol.sendData": (
        "ws_protocol.py",
        "8a61f014fe4c4eaa",
    ),
    "autobahn.websocket.protocol:WebSocketProtocol.sendMessage": (
        "ws_protocol.py",
        "5bd9b898eb20273e",
    ),
    "autobahn.websocket.protocol:WebSocketProtocol.sendCloseFrame": (
        "ws_protocol.py",
        "47a8eeeef77d4a02",
    ),
    "autobahn.websocket.protocol:WebSocketProtocol._connectionMade": (
        "ws_protocol.py",
        "1fb169b67c8cb5ff",
    ),
    # The denial response: onConnect's ConnectionDeny fails the handshake, which writes
    # its error response, then drops the connection.
    "autobahn.websocket.protocol:WebSocketServerProtocol.processHandshake": (
        "ws_protocol.py",
        "796d5bc3b4c6be98",
    ),
    "autobahn.websocket.protocol:WebSocketServerProtocol.failHandshake": (
        "ws_protocol.py",
        "9209a2e67f83425d",
    ),
    "autobahn.websocket.protocol:WebSocketServerProtocol.sendHttpErrorResponse": (
        "ws_protocol.py",
        "cb030319d270d4d1",
    ),
    # The class, not its __str__: quiet_debug_formatting replaces that at run time.
    "autobahn.websocket.protocol:Timings": ("ws_protocol.py", "113be0996693d212"),
    # Twisted: the transport's buffers that write_now reads.
    "twisted.internet.abstract:FileDescriptor.write": ("ws_protocol.py", "1bcfa23120d692cf"),
    "twisted.internet.abstract:FileDescriptor.doWrite": ("ws_protocol.py", "6aaaf350da3810af"),
    "twisted.internet.tcp:Connection.writeSomeData": ("ws_protocol.py", "413efd47f8a81680"),
    "twisted.internet.asyncioreactor:AsyncioSelectorReactor.__init__": (
        "daphne_server.py",
        "5a015dc6559d2e19",
    ),
    # channels: the session wrapper KeepServerSend steps around.
    "channels.sessions:InstanceSessionWrapper": ("asgi_send.py", "d13d037442dbd6d1"),
    # channels_redis: the key layout group_send and receive_batch write and read, and the
    # pub/sub shard this module subclasses.
    "channels_redis.core:RedisChannelLayer.group_send": ("layers.py", "ade3142d0ddd6753"),
    "channels_redis.core:RedisChannelLayer.group_add": ("layers.py", "fd47797b59276c9a"),
    "channels_redis.core:RedisChannelLayer.group_discard": ("layers.py", "cc385e93552b442c"),
    "channels_redis.core:RedisChannelLayer.receive": ("layers.py", "85923662d8612283"),
    "channels_redis.core:RedisChannelLayer._group_key": ("layers.py", "f498a402db6144bf"),
    "channels_redis.core:RedisChannelLayer.send": ("layers.py", "8e8c9ba102d31139"),
    "channels_redis.pubsub:RedisSingleShardConnection": ("layers.py", "80351ca2c30f63f3"),
    "channels_redis.pubsub:RedisPubSubChannelLayer._get_layer": ("layers.py", "7a28a489b1a5210e"),
    "channels_redis.pubsub:RedisPubSubLoopLayer.__init__": ("layers.py", "d30764ad2530326c"),
    "channels_redis.utils:_close_redis": ("layers.py", "91e44c83c8d5f34d"),
    "channels_redis.core:RedisChannelLayer.create_pool": ("layers.py", "80dd4d29f440688c"),
    "channels_redis.utils:create_pool": ("layers.py", "45cb4b2df44d411f"),
    "channels_redis.utils:_consistent_hash": ("layers.py", "440454c611ad7196"),
    "channels_redis.pubsub:RedisPubSubLoopLayer._get_group_channel_name": (
        "layers.py",
        "d8c906ff82ab691d",
    ),
    "channels_redis.pubsub:RedisPubSubLoopLayer._get_shard": ("layers.py", "2f28d14e3497e3f6"),
}


def resolve(target: str) -> object:
    module_name, _, qualname = target.partition(":")
    found: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def fingerprint(target: str) -> str:
    """A short hash of the target's source, blind to indentation only."""
    source = inspect.getsource(resolve(target))
    lines = "\n".join(line.strip() for line in source.splitlines() if line.strip())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def version_problems() -> list[str]:
    problems = []
    for dist, line in VERSIONS.items():
        found = version(dist)
        if found != line and not found.startswith(line + "."):
            problems.append(
                f"re-sync realtime/ with {dist} {found}: its modules track {dist} {line}.x "
                f"(see realtime/pins.py); then update VERSIONS and pyproject.toml"
            )
    return problems


def source_problems() -> list[str]:
    problems = []
    for target, (module, expected) in SOURCES.items():
        try:
            found = fingerprint(target)
        except (AttributeError, ImportError, OSError, TypeError) as exc:
            problems.append(f"re-sync realtime/{module}: {target} is gone ({exc})")
            continue
        if found != expected:
            problems.append(
                f"re-sync realtime/{module}: {target} changed upstream "
                f"(fingerprint {found}, recorded {expected}); port the change, then record it"
            )
    return problems


if __name__ == "__main__":  # prints the table to paste into SOURCES
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for target, (module, _) in SOURCES.items():
        print(f'    "{target}": ("{module}", "{fingerprint(target)}"),')
