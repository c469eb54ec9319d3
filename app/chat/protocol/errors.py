"""Error codes: the one error type the chat raises, and the table of its codes.

A refusal has the same code on a socket (an `error` frame, frames.error_frame) and over
HTTP (`{"error": {"code", "message"}}` with the code's status). docs/protocol.md
("Errors") lists the same codes and statuses; tests/core checks that it does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError
from redis.exceptions import RedisError

from .frames import error_frame

# The logger these lines have always had (docs/operations.md shows one).
log = logging.getLogger("chat.consumers")


@dataclass(frozen=True, slots=True)
class Code:
    status: int  # HTTP status of the same refusal in the REST API
    meaning: str


CODES: dict[str, Code] = {
    "invalid_json": Code(400, "the frame is not JSON"),
    "unsupported_version": Code(400, "the URL's ?v= names no protocol version this server speaks"),
    "invalid_payload": Code(400, "wrong shape: a field missing, of the wrong type or range"),
    "unknown_type": Code(400, "the frame's type is not one the server knows"),
    "empty_message": Code(400, "the message has nothing visible"),
    "message_too_long": Code(400, "the message or the frame is over its limit"),
    "not_authenticated": Code(401, "anonymous clients cannot do this, or the token is invalid"),
    "forbidden": Code(403, "not yours to change, or a staff-only room"),
    "not_found": Code(404, "no such room or message"),
    "unknown_user": Code(404, "no active user with that name"),
    # A room name that looks like an existing room's (chat.names.name_key).
    "name_taken": Code(409, "a new room's name looks like an existing room's"),
    "rate_limited": Code(429, "over a rate or abuse limit"),
    # Beyond the request's control: a dependency (database, Redis) is unreachable. The
    # request may be retried.
    "unavailable": Code(503, "the database or Redis is unreachable; nothing was done"),
    # This process is at its limit of joins in progress or open sockets
    # (services/admission.py): the handshake's 503 (its Retry-After), or the frame's
    # `retry_after` under a server without the denial response, says when to try again.
    "overloaded": Code(503, "this server process is at its limit; come back after retry_after"),
    "internal_error": Code(500, "the server failed on this request"),
}

# Sentences more than one place says.
UNAVAILABLE = "The chat is briefly unavailable (storage unreachable); try again."
TOKEN_INVALID = "The bearer token is not valid."


class ChatError(Exception):
    """Refusal of one request; the connection or process that saw it carries on."""

    def __init__(self, code: str, message: str):
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return CODES[self.code].status

    def as_frame(self, for_type: str | None = None, client_id: str | None = None) -> dict:
        return error_frame(self.code, self.message, for_type, client_id)

    def as_http_body(self) -> dict:
        """The same refusal as an HTTP response's JSON body, the HTTP API's shape."""
        return {"error": {"code": self.code, "message": self.message}}


def unexpected(exc: Exception) -> ChatError:
    """Turn a failure the client did not cause into an error it can act on."""
    if isinstance(exc, (RedisError, DatabaseError, InterfaceError, ConnectionError, OSError)):
        log.warning("dependency unavailable: %r", exc)
        return ChatError("unavailable", UNAVAILABLE)
    log.exception("unexpected error while handling a frame")
    return ChatError("internal_error", "The server failed to handle this frame; try again.")
