"""Fixtures for protocol tests: users, tokens and WebSocket clients on the real layer."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from accounts.models import ApiToken
from chat import runtime
from chat.models import Room

ORIGIN = (b"origin", b"http://testserver")


@pytest.fixture
def make_user(db):
    def make(username: str, *, staff: bool = False, password: str = "pw-123456"):
        return get_user_model().objects.create_user(
            username=username, password=password, is_staff=staff
        )

    return make


@pytest.fixture
def token_for(db):
    def issue(user) -> str:
        return ApiToken.issue(user)[1]

    return issue


@pytest.fixture
def room(db):
    def make(name: str = "lobby", *, staff_only: bool = False) -> Room:
        return Room.objects.get_or_create(name=name, defaults={"staff_only": staff_only})[0]

    return make


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def settle() -> float:
    """Long enough for a presence frame that is due to have gone out."""
    return 4 * settings.CHAT_PRESENCE_INTERVAL


class Communicator(WebsocketCommunicator):
    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        await super().disconnect(code, timeout)
        # The leave's presence frame goes out before the test's next step.
        await asyncio.sleep(settle())


class Ws:
    """Opens WebsocketCommunicators on the real ASGI application and closes them all."""

    def __init__(self):
        self.open: list[WebsocketCommunicator] = []

    async def connect(
        self,
        room: str = "lobby",
        *,
        token: str | None = None,
        user=None,
        cookie: bytes | None = None,
        origin: bytes | None = b"http://testserver",
        host: bytes | None = b"testserver",
        headers: list | None = None,
        expect: bool = True,
        skip_greeting: bool = True,
        version: int | None = None,
    ) -> WebsocketCommunicator:
        from config.asgi import application

        if user is not None:
            token = await database_sync_to_async(lambda: ApiToken.issue(user)[1])()
        hdrs = list(headers or [])
        if host is not None:
            hdrs.append((b"host", host))
        if origin is not None:
            hdrs.append((b"origin", origin))
        if token is not None:
            hdrs.append((b"authorization", f"Bearer {token}".encode()))
        if cookie is not None:
            hdrs.append((b"cookie", cookie))
        query = f"?v={version}" if version is not None else ""
        comm = Communicator(application, f"/ws/chat/{room}/{query}", headers=hdrs)
        connected, _ = await comm.connect(timeout=5)
        assert connected is expect, "handshake outcome"
        self.open.append(comm)
        if connected and skip_greeting:
            first = await comm.receive_json_from(timeout=5)
            if first["type"] == "history":
                users = await comm.receive_json_from(timeout=5)
                assert users["type"] == "user_list", users
            # The arrival's presence frame goes out before the test's next step, so the
            # next newcomer is not told of this one (it is in that newcomer's user_list).
            await asyncio.sleep(settle())
        return comm

    async def close_all(self):
        for comm in self.open:
            with contextlib.suppress(Exception):
                await comm.disconnect(timeout=3)
        self.open.clear()


@pytest.fixture
async def ws():
    clients = Ws()
    yield clients
    await clients.close_all()
    await asyncio.sleep(0)
    # The consumers' database thread keeps its connection if a consumer was cancelled.
    await database_sync_to_async(connections.close_all)()
    await runtime.close_loop()
    # A fresh layer per test: channels_redis lets only one event loop receive at a time,
    # and a read left behind on this test's loop must not block the next one's.
    layer = channel_layers.backends.pop("default", None)
    if layer is not None and hasattr(layer, "close_pools"):
        await layer.close_pools()


async def recv(comm: WebsocketCommunicator, timeout: float = 3) -> dict:
    return await comm.receive_json_from(timeout=timeout)


async def recv_type(comm: WebsocketCommunicator, kind: str, timeout: float = 3) -> dict:
    """The next frame of `kind`, skipping presence chatter that other clients cause."""
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        if frame["type"] == kind:
            return frame
        assert frame["type"] in ("user_join", "user_leave", "presence", "typing"), frame


async def nothing(comm: WebsocketCommunicator, timeout: float = 0.3) -> bool:
    return await comm.receive_nothing(timeout=timeout)
