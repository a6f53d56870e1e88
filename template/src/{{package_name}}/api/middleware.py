"""Request IDs, JSON bodies, metrics, CORS and the size limit, as pure ASGI middleware so streaming still streams."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge
from ..platform.core.logs import bind, log_context
from ..platform.core.metrics import Metrics
from ..settings import Settings
from .errors import error_response


class BodyLimit:
    """413 for bodies over the limit, whether announced by Content-Length or streamed chunked."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await error_response(PayloadTooLarge.status_code, PayloadTooLarge.detail)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge()
            return message

        await self.app(scope, limited_receive, send)


# A caller's own request ID is kept when it is short and plain; anything else gets a fresh one.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestEnvelope:
    """What every HTTP request gets, in one layer (each layer costs every request a call and a send wrapper):

    - its ID (the caller's X-Request-Id, or a new one) on its log records, its span and its response; what
      the routes learn later (user, thread, run) joins the same log context;
    - JSON bodies whatever their label: proxies in front of browser clients forward JSON as
      `text/plain;charset=UTF-8` (Node's fetch), and the Agent Server reads it as JSON too;
    - the request metrics, labelled by the matched route's template, never by the raw path (thread IDs
      would explode the label cardinality);
    - threads that clients named by their own UUIDs called by those UUIDs in every answer, body and
      headers, streamed or not (`public_ids`; the stored IDs never leave the service).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, public_ids: Callable[[bytes], bytes]) -> None:
        self.app = app
        self.metrics = metrics
        self.public_ids = public_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status = 500
        public_ids = self.public_ids
        # A whole answer's start waits for its body, whose length the rewrite may change; a stream's does not.
        held: Message | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, held
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(name, public_ids(value)) for name, value in message.get("headers", [])]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
                if any(name == b"content-length" for name, _ in headers):
                    held = message
                    return
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                public = public_ids(body)
                if public is not body:
                    message = {**message, "body": public}
                if held is not None:
                    start, held = held, None
                    if public is not body and not message.get("more_body", False):
                        length = str(len(public)).encode()
                        headers = [(n, length if n == b"content-length" else v) for n, v in start["headers"]]
                        start = {**start, "headers": headers}
                    await send(start)
            await send(message)

        if scope["method"] in ("POST", "PUT", "PATCH"):
            # In place: the router leaves the matched route in this same scope for the request metrics.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"] = [*headers, (b"content-type", b"application/json")]
        with log_context(request_id=request_id):
            bind(request_id=request_id)
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route, method = str(getattr(scope.get("route"), "path", "unmatched")), scope["method"]
                self.metrics.http_requests.labels(method, route, str(status)).inc()
                self.metrics.http_request_duration.labels(method, route).observe(time.perf_counter() - start)


def install(app: FastAPI, settings: Settings, metrics: Metrics, public_ids: Callable[[bytes], bytes]) -> None:
    # Added last runs first: every answer (the body limit's 413s too) has a request ID and is counted, and
    # carries the CORS headers a browser needs to read it.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_allow_origins or settings.cors_allow_origin_regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_origin_regex=settings.cors_allow_origin_regex,
            allow_methods=settings.cors_allow_methods,
            allow_headers=settings.cors_allow_headers,
            # What the JS SDK reads: where a run lives, and the next page of a search.
            expose_headers=["content-location", "location", "x-pagination-next", "x-pagination-total"],
        )
    app.add_middleware(RequestEnvelope, metrics=metrics, public_ids=public_ids)
