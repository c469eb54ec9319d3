"""The WebSocket endpoint /ws/chat/<room>/: authenticate, parse, authorize, delegate.

Nothing here stores or broadcasts by itself: the protocol package (chat/protocol/)
validates and builds frames, services/ act, and services/delivery.py is the only way
frames reach other connections. Errors become error frames; the connection stays open.
"""

from __future__ import annotations

import contextlib
import logging
import uuid

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from config import logs
from realtime.asgi_send import frame_writer, server_send

from . import admission_gate, metrics, protocol
from .names import room_group, user_inbox
from .protocol import closes, frames
from .protocol.errors import TOKEN_INVALID, ChatError, unexpected
from .services import (
    abuse,
    admission,
    fanout,
    messages,
    presence,
    ratelimit,
    rooms,
    shared_history,
)
from .services.delivery import encode

log = logging.getLogger(__name__)


class ChatConsumer(AsyncJsonWebsocketConsumer):
    # No channel per consumer: services/fanout.py subscribes the process once per group
    # and hands each frame to this consumer's socket (an alias that is not configured
    # makes channels skip the consumer's own layer channel and receive loop).
    channel_layer_alias = "chat.fanout"

    room = None
    user = None
    username: str | None = None
    member: fanout.Member | None = None
    accepted = False
    counted_open = False
    version = protocol.LATEST
    slot: admission.Slot | None = None

    async def dispatch(self, message) -> None:
        """channels' dispatch without its hop to the database thread before each handler.

        channels closes stale Django connections there, as at a request's start, which is
        a thread switch and a wake-up of the loop for every frame a client sends. Here
        every ORM call already runs through database_sync_to_async, which does the same
        on the database thread around the call; a chat message
        (services/messages/store.py) does not touch that thread at all.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        """channels' websocket_disconnect without its hop to the database thread after
        `disconnect` (see dispatch; a drain or a storm's end is thousands at once), and
        without its discard of `self.groups`, which this consumer leaves empty: its
        groups are the hub's (services/fanout.py), left in `disconnect`."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    # --- connection lifecycle -----------------------------------------------------

    async def connect(self) -> None:
        self.conn_id = uuid.uuid4().hex
        # Admitted at the door (chat/admission_gate.py), ahead of the auth look-ups; the
        # door gives the slot back when this application ends.
        self.slot = self.scope.get(admission_gate.SCOPE_KEY)
        try:
            await self._connect()
        finally:
            if self.slot is not None:
                self.slot.joined()  # greeting sent or refused: no longer a join in progress

    async def _connect(self) -> None:
        try:
            self.version = protocol.version(self.scope.get("query_string", b""))
        except ChatError as exc:
            await self._refuse(exc)
            return
        self.history_budget = ratelimit.ConnectionBudget(
            settings.CHAT_HISTORY_PER_SECOND,
            settings.CHAT_HISTORY_BURST,
            "history and resume requests",
        )
        logs.connection_id.set(self.conn_id[:12])
        user = self.scope.get("user")
        self.user = getattr(user, "_wrapped", user)
        if self.scope.get("token_invalid"):
            await self._refuse(ChatError("not_authenticated", TOKEN_INVALID))
            return
        if self.scope.get("auth_error") is not None:  # the token could not be checked
            await self._refuse(unexpected(self.scope["auth_error"]), closes.TRY_AGAIN_LATER)
            return
        # Sockets per user and per address, across replicas (services/abuse.py).
        user_id = self.user.pk if self.user.is_authenticated else None
        try:
            await abuse.admit_socket(user_id, abuse.scope_address(self.scope), self.conn_id)
        except ChatError as exc:
            await self._refuse(exc)
            return
        except Exception as exc:  # Redis down
            await self._refuse(unexpected(exc), closes.TRY_AGAIN_LATER)
            return
        try:
            self.room = await rooms.open_room_async(
                self.scope["url_route"]["kwargs"]["room_name"], self.user
            )
        except ChatError as exc:
            await self._refuse(exc)
            return
        except Exception as exc:  # database down: say so instead of a bare 1011
            await self._refuse(unexpected(exc), closes.TRY_AGAIN_LATER)
            return
        try:
            await self._join()
        except Exception as exc:
            await self._forget()
            await self._refuse(unexpected(exc), closes.TRY_AGAIN_LATER)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However this consumer ends (a crash, a cancelled task at shutdown), it must
            # stop being refreshed in presence (or it would never expire) and stop being
            # handed frames.
            abuse.keeper().discard(self.conn_id)  # its slot expires unless released
            if self.member is not None:
                presence.tracker().discard(self.conn_id)
                fanout.hub().forget(self.member)

    def _groups(self) -> list[str]:
        groups = [room_group(self.room.pk)]
        if self.username:
            groups.append(user_inbox(self.user.pk))
        return groups

    async def _forget(self) -> None:
        """Undo a half-done join (best effort: presence expires after the TTL anyway)."""
        presence.tracker().discard(self.conn_id)
        with contextlib.suppress(Exception):
            for group in self._groups():
                await fanout.hub().leave(group, self.member)
            if self.username:
                await presence.store().leave(self.room.pk, self.username, self.conn_id)
        self.room = None

    async def _join(self) -> None:
        if self.user.is_authenticated:
            self.username = self.user.username
        # Join the groups before reading history: a message stored meanwhile then shows
        # up twice at worst (clients de-duplicate by id), never zero times. Live frames
        # wait in the member until the greeting is out.
        self._server_send = server_send(self.scope, self.base_send)
        self.member = fanout.Member(
            self.conn_id,
            self.username,
            self._relay,
            self._lost_layer,
            write=frame_writer(self.scope),
            legacy=self.version < 2,
        )
        for group in self._groups():
            await fanout.hub().join(group, self.member)
        await self.accept()
        self.accepted = True
        metrics.FRAMES_OUT.labels("history").inc()
        await self.send(text_data=await shared_history.greeting(self.room))
        if self.username:
            page = await presence.arrive(self.room.pk, self.username, self.conn_id)
        else:
            limit = settings.CHAT_PRESENCE_LIST_MAX
            page = await presence.store().page(self.room.pk, None, limit)
        await self.send_frame(frames.user_list_frame(page))
        await self.member.ready()
        metrics.WS_CONNECTS.labels("accepted").inc()
        metrics.WS_OPEN.inc()
        self.counted_open = True

    async def _refuse(self, error: ChatError, code: int | None = None) -> None:
        """Accept only to say why, then close: a bare refusal tells a client nothing."""
        metrics.WS_CONNECTS.labels(error.code).inc()
        if not self.accepted:
            await self.accept()
            self.accepted = True
        await self.send_frame(error.as_frame())
        await self.close(code or closes.for_refusal(error.code))

    async def disconnect(self, code: int) -> None:
        metrics.WS_CLOSES.labels(str(code)).inc()
        with contextlib.suppress(Exception):  # else it expires with its heartbeat
            await abuse.release_socket(self.conn_id)
        if self.counted_open:
            metrics.WS_OPEN.dec()
        if self.room is None or self.member is None:
            return
        try:
            for group in self._groups():
                await fanout.hub().leave(group, self.member)
            if self.username:
                # Anything but a normal close may be followed by a quick return (a drain's
                # 1012, a dropped network, a reload's 1001): the room hears nothing then.
                await presence.depart(
                    self.room.pk, self.username, self.conn_id, linger=code != closes.NORMAL
                )
        except Exception:
            # The entry expires after the TTL anyway; others then get user_leave.
            log.warning("cleanup after disconnect failed", exc_info=True)
        finally:
            presence.tracker().discard(self.conn_id)

    # --- inbound --------------------------------------------------------------------

    @classmethod
    async def decode_json(cls, text_data: str):
        return protocol.decode(text_data)

    @classmethod
    async def encode_json(cls, content) -> str:
        return encode(content)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        try:
            if text_data is None:
                metrics.FRAMES_IN.labels("binary").inc()
                raise ChatError("invalid_payload", "Binary frames are not supported; send JSON.")
            content = await self.decode_json(text_data)
        except ChatError as exc:
            metrics.FRAMES_IN.labels("invalid").inc()
            await self.send_error(exc)
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        kind = protocol.frame_type(content)
        metrics.FRAMES_IN.labels(metrics.frame_label(kind)).inc()
        client_id = None
        try:
            client_id = protocol.client_id(content)
            await self.handle(protocol.parse(content), client_id)
        except ChatError as exc:
            await self.send_error(exc, kind, client_id)
        except Exception as exc:
            await self.send_error(unexpected(exc), kind, client_id)

    async def handle(self, command: protocol.Command, client_id: str | None = None) -> None:
        room, user = self.room, self.user
        match command:
            case protocol.SendMessage(message=text):
                await messages.post(room, user, text, client_id=client_id)
            case protocol.SendPrivate(to=to, message=text):
                await messages.post_private(user, to, text, client_id=client_id)
            case protocol.EditMessage(id=message_id, message=text):
                await messages.edit(room, user, message_id, text)
            case protocol.DeleteMessage(id=message_id):
                await messages.delete(room, user, message_id)
            case protocol.React(id=message_id, emoji=emoji):
                await messages.react(room, user, message_id, emoji)
            case protocol.Typing():
                await messages.typing(room, user)
            case protocol.History(before=before, limit=limit):
                self.history_budget.spend()
                page, more = await messages.history(room, before=before, limit=limit)
                await self.send_frame(frames.history_frame(page, more, "history"))
            case protocol.Resume(after=after, private_after=private_after):
                self.history_budget.spend()
                metrics.FRAMES_OUT.labels("history").inc()
                await self.send(text_data=await shared_history.resume(room, after))
                if private_after is not None:
                    page, more = await messages.missed_private(user, private_after)
                    await self.send_frame(frames.private_history_frame(page, more))
            case protocol.Ping():
                await self.send_frame(frames.pong_frame())
            case protocol.UserList(after=after):
                self.history_budget.spend()  # a page of names costs like a page of history
                limit = settings.CHAT_PRESENCE_LIST_MAX
                page = await presence.store().page(self.room.pk, after, limit)
                await self.send_frame(frames.user_list_frame(page, after=after))

    # --- outbound -------------------------------------------------------------------

    async def send_frame(self, frame: dict) -> None:
        metrics.FRAMES_OUT.labels(metrics.frame_label(frame["type"])).inc()
        await self.send_json(frame)

    async def send_error(
        self, error: ChatError, for_type: str | None = None, client_id: str | None = None
    ) -> None:
        metrics.ERRORS.labels(error.code).inc()
        await self.send_frame(error.as_frame(for_type, client_id))

    async def _relay(self, text: str) -> None:
        """A frame from services/fanout.py, already serialized once for everyone. Straight
        to the server (realtime/asgi_send.py): once per socket per message, the
        hottest path there is."""
        await self._server_send({"type": "websocket.send", "text": text})

    async def _lost_layer(self, exc: Exception) -> None:
        """The channel layer failed: this socket would hear nothing more. Say so and close
        with 1013; the client reconnects (and resumes) once the layer is back."""
        with contextlib.suppress(Exception):
            await self.send_error(unexpected(exc))
            await self.close(closes.TRY_AGAIN_LATER)
