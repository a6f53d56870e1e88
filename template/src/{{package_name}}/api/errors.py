"""Maps every failure to its HTTP status in one place; clients always get a JSON error body."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PayloadTooLarge, ServiceError, TooManyRequests, Unavailable
from ..platform.core.database import DATABASE_OUTAGES

log = logging.getLogger(__name__)

UNSTORABLE_TEXT = (psycopg.errors.UntranslatableCharacter, psycopg.errors.CharacterNotInRepertoire)


def error_response(status: int, detail: object, retry_after: int = 1) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, Unavailable):
            log.warning("unavailable: %s", exc.detail)
        if isinstance(exc, TooManyRequests):
            return error_response(exc.status_code, exc.detail, exc.retry_after)
        return error_response(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return error_response(422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI turns any failure while reading the body into a 400; the body limit's is a 413.
        if isinstance(exc.__cause__, PayloadTooLarge):
            return error_response(PayloadTooLarge.status_code, PayloadTooLarge.detail)
        return error_response(exc.status_code, exc.detail)

    @app.exception_handler(psycopg.DataError)
    async def data_error(_: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input that got past validation but that PostgreSQL cannot store is still the caller's to fix:
        # characters the database encoding lacks, or a NUL, which psycopg refuses before sending (the
        # request models refuse it first, platform/core/fields.py StorableText; this covers a field without it).
        if isinstance(exc, UNSTORABLE_TEXT):
            return error_response(422, f"input holds text PostgreSQL cannot store: {exc.diag.message_primary}")
        if "NUL" in str(exc):
            return error_response(422, "text must not contain NUL (\\u0000): PostgreSQL cannot store it")
        log.exception("unhandled data error", exc_info=exc)
        return error_response(500, "internal error")

    for outage in DATABASE_OUTAGES:

        @app.exception_handler(outage)
        async def database_outage(_: Request, exc: Exception) -> JSONResponse:
            log.warning("database unavailable: %s", exc)
            return error_response(503, "database unavailable")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error")
