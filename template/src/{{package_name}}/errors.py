"""One exception per failure a caller can act on; api/errors.py maps each to its HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    detail = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail


class NotFound(ServiceError):
    status_code = 404
    detail = "not found"


class ThreadNotFound(NotFound):
    detail = "Thread not found"


class Conflict(ServiceError):
    status_code = 409
    detail = "conflict"


class Unauthenticated(ServiceError):
    status_code = 401
    detail = "authentication required"


class TooManyRequests(ServiceError):
    """Over a per-user limit; retry after `retry_after` seconds."""

    status_code = 429
    detail = "too many requests"

    def __init__(self, detail: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


class PayloadTooLarge(ServiceError):
    status_code = 413
    detail = "request body too large"


class Unavailable(ServiceError):
    """A dependency (PostgreSQL, the object store, the checkpoint queue) cannot serve now; retry later."""

    status_code = 503
    detail = "service temporarily unavailable"


class BadRequest(ServiceError):
    """A request whose options contradict one another, refused with the Agent Server's 400."""

    status_code = 400
    detail = "bad request"


class InvalidInput(ServiceError):
    """Well-formed JSON whose content the graph cannot take."""

    status_code = 422
    detail = "invalid input"
