"""Webhooks: when a run that named a `webhook` ends, its record is POSTed there, as the Agent Server sends it.

The URL is checked when the run is created (a 422 then) and again before each delivery, since DNS can change
meanwhile: with the policy's defaults, loopback and private addresses are refused, and always link-local,
multicast and unspecified ones (cloud metadata endpoints live there). The policy is the `webhooks` section of
langgraph.json, as langgraph-api reads it (or the same JSON in `LANGGRAPH_WEBHOOKS`).

Deliveries wait in a bounded queue in the replica that ran the run, and are retried with exponential backoff
on network errors, 5xx, 408 and 429. A full queue, a refused URL at delivery, a 4xx or retries used up are
logged and counted (`webhook_deliveries_total{result}`), never silently dropped. A replica that stops gives its
queue a grace period; what is left then is logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ...errors import InvalidInput
from ..core.encoding import jsonable
from ..core.metrics import Metrics

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset(("localhost", "localhost.localdomain", "host.docker.internal"))
RETRIED_STATUSES = frozenset((408, 429))
JSON_CONTENT = {"content-type": "application/json"}


def unchanged(data: bytes) -> bytes:
    return data


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Which webhook URLs runs may name, and what deliveries carry (langgraph.json `webhooks`)."""

    allowed_domains: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = ()
    max_url_length: int = 4096
    require_https: bool = False
    disable_loopback: bool = True
    # Refused by default here, unlike langgraph-api: a service inside a company network would otherwise
    # POST wherever a caller points it (docs/coming-from-langgraph.md).
    disable_private_ips: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    allowed_fields: frozenset[str] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> WebhookPolicy:
        config = config or {}
        url = config.get("url") or {}
        fields = config.get("allowed_fields")
        return cls(
            allowed_domains=tuple(d.strip().lower() for d in url.get("allowed_domains") or ()),
            allowed_ports=tuple(int(p) for p in url.get("allowed_ports") or ()),
            max_url_length=int(url.get("max_url_length", 4096)),
            require_https=bool(url.get("require_https", False)),
            disable_loopback=bool(url.get("disable_loopback", True)),
            disable_private_ips=bool(url.get("disable_private_ips", True)),
            headers={str(k): str(v) for k, v in (config.get("headers") or {}).items()},
            allowed_fields=frozenset(fields) if fields else None,
        )

    async def check(self, url: str) -> None:
        """Raise InvalidInput (422) unless a run may name `url`, with langgraph-api's messages."""
        if len(url) > self.max_url_length:
            raise InvalidInput("Webhook URL too long")
        try:
            parts = urlsplit(url)
        except ValueError:
            raise InvalidInput("Webhook URL is not a URL") from None
        if parts.scheme not in ("http", "https"):
            # langgraph-api posts a relative URL to its own routes, unauthenticated: never here.
            raise InvalidInput("Webhook must be an absolute http or https URL")
        if self.require_https and parts.scheme != "https":
            raise InvalidInput("Webhook must use https")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidInput("Webhook URL has an invalid port") from None
        if self.allowed_ports and port not in self.allowed_ports:
            raise InvalidInput(f"Webhook port {port} not allowed")
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidInput(f"Invalid webhook hostname '{host}'")
        if self.allowed_domains and not any(_matches(host, pattern) for pattern in self.allowed_domains):
            raise InvalidInput("Webhook domain not allowed")
        if self.disable_loopback and host in LOOPBACK_NAMES:
            raise InvalidInput("Webhook host blocked: loopback address")
        for address in await _addresses(host, port):
            if reason := self._blocked(address):
                raise InvalidInput(f"Webhook host blocked: {reason}")

    def _blocked(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return "loopback address" if self.disable_loopback else None
        if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
            return "link-local, multicast or reserved address"
        if self.disable_private_ips and (address.is_private or not address.is_global):
            return "private address"
        return None

    def payload(self, run: dict[str, Any], values: Any, error: dict[str, Any] | None) -> dict[str, Any]:
        body = {**run, "webhook_sent_at": datetime.now(UTC).isoformat(), "values": jsonable(values)}
        if error is not None:
            body["error"] = error
        if self.allowed_fields is None:
            return body
        return {key: value for key, value in body.items() if key in self.allowed_fields}


def _matches(host: str, pattern: str) -> bool:
    # "*.example.com" matches subdomains only, as in langgraph-api.
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # IDNA refuses some names outright
        raise InvalidInput(f"Webhook host blocked: {host} does not resolve") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    body: dict[str, Any]


class WebhookSender:
    """The replica's queue of deliveries and the tasks that make them (opened and closed by the lifespan)."""

    def __init__(
        self,
        policy: WebhookPolicy,
        metrics: Metrics,
        *,
        queue_size: int = 1000,
        attempts: int = 5,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        senders: int = 4,
        public_ids: Callable[[bytes], bytes] = unchanged,
    ) -> None:
        """`public_ids` rewrites stored thread IDs in a body to those the client knows (ThreadManager's)."""
        self.policy = policy
        self.public_ids = public_ids
        self.metrics = metrics
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(queue_size)
        # Redirects are not followed: a checked URL must not hand the POST on to an unchecked one.
        self._client = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False, headers=policy.headers)
        self._tasks = [asyncio.create_task(self._sender(), name=f"webhook-sender-{n}") for n in range(senders)]

    def submit(self, url: str, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(Delivery(url, body))
        except asyncio.QueueFull:
            self._count("queue_full")
            log.error("webhook for run %s not sent: the queue of %d is full", body.get("run_id"), self._queue.maxsize)

    async def close(self, grace_seconds: float) -> None:
        """Send what is queued within `grace_seconds`, then stop; what is left is logged."""
        try:
            async with asyncio.timeout(grace_seconds):
                await self._queue.join()
        except TimeoutError:
            log.error("%d webhooks not sent at shutdown", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _sender(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                self._count(await self._deliver(delivery))
            except Exception:  # a bug must not stop the sender
                log.exception("webhook delivery to %s failed", delivery.url)
                self._count("failed")
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> str:
        run_id = delivery.body.get("run_id")
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                await self.policy.check(delivery.url)  # DNS may have changed since the run was created
            except InvalidInput as refused:
                log.error("webhook for run %s not sent: %s", run_id, refused)
                return "refused"
            try:
                content = self.public_ids(json.dumps(delivery.body).encode())
                response = await self._client.post(delivery.url, content=content, headers=JSON_CONTENT)
            except httpx.HTTPError as exc:
                log.warning("webhook for run %s, attempt %d: %r", run_id, attempt + 1, exc)
                continue
            if response.is_success:
                return "delivered"
            if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                log.error("webhook for run %s answered %d: not retried", run_id, response.status_code)
                return "failed"
            log.warning("webhook for run %s, attempt %d: %d", run_id, attempt + 1, response.status_code)
        log.error("webhook for run %s not sent after %d attempts", run_id, self.attempts)
        return "failed"

    def _count(self, result: str) -> None:
        self.metrics.webhook_deliveries.labels(result).inc()
