"""ASGI entry point (daphne): HTTP through Django, WebSockets through Channels.

The Django application is built first so that models are ready before the routing
imports consumers.
"""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from accounts.auth import OriginGuard, WebSocketAuthStack  # noqa: E402
from chat.admission_gate import AdmissionMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from realtime.asgi_send import KeepServerSend  # noqa: E402

if not settings.REDIS_URL:
    logging.getLogger("chat").warning(
        "REDIS_URL is unset: in-memory channel layer and presence "
        "(single process only; set REDIS_URL to run more than one)."
    )

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Cheapest checks first: the origin, then admission control (no storage work),
        # then the session or token look-up.
        "websocket": KeepServerSend(
            OriginGuard(AdmissionMiddleware(WebSocketAuthStack(URLRouter(websocket_urlpatterns))))
        ),
    }
)
