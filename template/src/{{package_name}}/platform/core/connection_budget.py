"""The connection budget: the PostgreSQL connections every replica's worker processes may open, against
what the server accepts.

Each replica's pool may grow to POOL_MAX_SIZE on its own, so nothing fails until load arrives, and then
with "too many clients" on every replica at once. One pure calculation, so that the ops check (reading the
deployment files) and the start-up warning (reading the live server) do the same arithmetic and print it
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

# Each worker process holds one connection outside its pool: the LISTEN connection of run notifications.
# (The start-up migration lock holds one too, but only before the LISTEN connection opens.)
SESSION_CONNECTIONS_PER_WORKER = 1
# Kept free for what is not the service: migrations run by hand, psql, pg_dump, a metrics exporter.
ADMIN_MARGIN = 10
# PostgreSQL's defaults, for a deployment file that does not set them.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_SUPERUSER_RESERVED_CONNECTIONS = 3


class ConnectionBudgetExceeded(ValueError):
    """The deployment may open more connections than the server accepts; the message has the arithmetic."""


@dataclass(frozen=True)
class ConnectionBudget:
    """`reserved`: superuser_reserved_connections (plus reserved_connections on PostgreSQL 16+)."""

    replicas: int
    workers: int
    pool_max_size: int
    max_connections: int
    reserved: int = DEFAULT_SUPERUSER_RESERVED_CONNECTIONS
    admin_margin: int = ADMIN_MARGIN

    @property
    def needed(self) -> int:
        return self.replicas * self.workers * (self.pool_max_size + SESSION_CONNECTIONS_PER_WORKER)

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved - self.admin_margin

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def arithmetic(self) -> str:
        return (
            f"{self.replicas} replicas x {self.workers} workers x ({self.pool_max_size} pooled"
            f" + {SESSION_CONNECTIONS_PER_WORKER} LISTEN) = {self.needed} connections"
            f" {'<=' if self.fits else '>'} max_connections {self.max_connections}"
            f" - {self.reserved} reserved - {self.admin_margin} for migrations and admin = {self.available}"
        )

    def check(self) -> None:
        if not self.fits:
            raise ConnectionBudgetExceeded(
                f"the connection budget does not fit: {self.arithmetic()}; lower POOL_MAX_SIZE or the replica"
                " count, raise max_connections, or put PgBouncer in between (docs/operations.md)"
            )
