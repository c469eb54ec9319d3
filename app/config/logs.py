"""Structured logging: one JSON object per line carrying the process role and replica.

Request and connection ids travel in context variables, so every line logged while a
request or a WebSocket connection is being handled names it without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "connection_id", default=None
)

ROLE = os.environ.get("CHAT_ROLE", "app")
REPLICA = os.environ.get("REPLICA_NAME") or socket.gethostname()

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Stamp every record with the process and the request or connection it belongs to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = ROLE
        record.replica = REPLICA
        # django.request logs a failed response after the middleware has returned: the
        # request it passes along still carries its id.
        record.request_id = request_id.get() or getattr(
            getattr(record, "request", None), "request_id", None
        )
        record.connection_id = connection_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and value is not None and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
