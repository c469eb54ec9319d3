"""The one error type the chat raises: a protocol code and a sentence for people."""

from __future__ import annotations

UNAVAILABLE = "The chat is briefly unavailable (storage unreachable); try again."


class ChatError(Exception):
    """Refusal of one request; the connection or process that saw it carries on."""

    # HTTP status for the same refusal in the REST API.
    STATUS = {
        "invalid_json": 400,
        "invalid_payload": 400,
        "unknown_type": 400,
        "empty_message": 400,
        "message_too_long": 400,
        # A WebSocket URL's ?v= names no protocol version this server speaks.
        "unsupported_version": 400,
        "not_authenticated": 401,
        "forbidden": 403,
        "not_found": 404,
        "unknown_user": 404,
        # A room name that looks like an existing room's (chat.names.name_key).
        "name_taken": 409,
        "rate_limited": 429,
        # Beyond the request's control: a dependency (database, Redis) is unreachable,
        # or the server failed. The request may be retried.
        "unavailable": 503,
        # This process is at its limit of joins in progress or open sockets
        # (services/admission.py); the frame's `retry_after` says when to try again.
        "overloaded": 503,
        "internal_error": 500,
    }

    def __init__(self, code: str, message: str):
        assert code in self.STATUS, code
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return self.STATUS[self.code]

    def as_frame(self, for_type: str | None = None, client_id: str | None = None) -> dict:
        frame = {"type": "error", "code": self.code, "message": self.message}
        if for_type:
            frame["for"] = for_type[:40]
        if client_id:
            frame["client_id"] = client_id
        return frame
