"""Admission control at the door: the first thing a WebSocket meets, ahead of auth.

The gate (services/admission.py) must refuse before any database or Redis work, and the
session or token look-up of the auth middleware is such work; so the check runs here,
outside it. An admitted socket carries its slot in the scope; the consumer marks the join
done when its greeting is out, and the slot is given back when the application ends.
"""

from __future__ import annotations

from . import metrics
from .protocol import closes
from .services import admission
from .services.delivery import encode

SCOPE_KEY = "chat.admission"


class AdmissionMiddleware:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        try:
            slot = admission.gate().admit()
        except admission.Overloaded as exc:
            await refuse(exc, receive, send)
            return None
        try:
            return await self.application({**scope, SCOPE_KEY: slot}, receive, send)
        finally:
            slot.release()


async def refuse(error: admission.Overloaded, receive, send) -> None:
    """Accept only to say why and when to come back, then close."""
    message = await receive()
    if message["type"] != "websocket.connect":  # the client is already gone
        return
    metrics.WS_CONNECTS.labels(error.code).inc()
    metrics.ERRORS.labels(error.code).inc()
    metrics.FRAMES_OUT.labels("error").inc()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": encode(error.as_frame())})
    await send({"type": "websocket.close", "code": closes.for_refusal(error.code)})
