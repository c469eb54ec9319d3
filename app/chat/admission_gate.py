"""Admission control at the door: the first thing a WebSocket meets, ahead of auth.

The gate (services/admission.py) must refuse before any database or Redis work, and the
session or token look-up of the auth middleware is such work; so the check runs here,
outside it. An admitted socket carries its slot in the scope; the consumer marks the join
done when its greeting is out, and the slot is given back when the application ends.

A refusal is an HTTP 503 with Retry-After instead of the upgrade, where the server offers
ASGI's denial-response extension (ours does: realtime/ws_protocol.py). Before the upgrade,
nginx can still pass the handshake on to another replica (`proxy_next_upstream http_503`),
so a busy replica's joins go to idle ones without a round trip to the client; only when
every replica refuses does the client see the 503. A server without the extension (the
test communicator, a bare daphne) cannot send one: there the socket is accepted only to be
told `overloaded` and closed with 1013, which clients handle too.
"""

from __future__ import annotations

import json

from . import metrics
from .protocol import closes
from .services import admission
from .services.delivery import encode

SCOPE_KEY = "chat.admission"
# ASGI's "Websocket Denial Response" extension (asgiref docs/extensions.rst).
DENIAL_RESPONSE = "websocket.http.response"


class AdmissionMiddleware:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        try:
            slot = admission.gate().admit()
        except admission.Overloaded as exc:
            await refuse(exc, scope, receive, send)
            return None
        try:
            return await self.application({**scope, SCOPE_KEY: slot}, receive, send)
        finally:
            slot.release()


async def refuse(error: admission.Overloaded, scope, receive, send) -> None:
    """Say why and when to come back: before the upgrade if the server can, else after."""
    message = await receive()
    if message["type"] != "websocket.connect":  # the client is already gone
        return
    metrics.WS_CONNECTS.labels(error.code).inc()
    if DENIAL_RESPONSE in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [
                    (b"retry-after", str(error.retry_after).encode()),
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        body = json.dumps(error.as_http_body()).encode()
        await send({"type": "websocket.http.response.body", "body": body})
        return
    metrics.ERRORS.labels(error.code).inc()
    metrics.FRAMES_OUT.labels("error").inc()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": encode(error.as_frame())})
    await send({"type": "websocket.close", "code": closes.for_refusal(error.code)})
