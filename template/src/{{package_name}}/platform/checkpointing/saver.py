"""The service's checkpoint saver: LangGraph's Postgres saver, made to use the whole pool.

The stock `AsyncPostgresSaver` holds one `asyncio.Lock` around every query, so a pool of
many connections serves one checkpoint query at a time per process. This subclass keeps
the stock schema, migrations, SQL and (de)serialisation, and changes two things:

- every query takes its own pooled connection, with no process-wide lock;
- a write is first turned into a `PendingWrite` (its SQL and rows), then committed in one
  transaction. Subclasses change how it is committed (the group-commit queue) or what is
  written (the hybrid object store) without touching the rest.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from ..database import Pool
from ..metrics import Metrics
from .latest import LATEST_CHECKPOINT, Latest, LatestCheckpoints

T = TypeVar("T")

# The service puts each run's ID in its checkpoints' metadata (configurable.run_id), as the Agent Server does.
DELETE_RUN_WRITES = """
    DELETE FROM checkpoint_writes w USING checkpoints c
    WHERE c.metadata->>'run_id' = ANY(%s) AND w.thread_id = c.thread_id
      AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
"""
DELETE_RUN_CHECKPOINTS = "DELETE FROM checkpoints WHERE metadata->>'run_id' = ANY(%s)"
# Every payload reference a thread's rows still hold (the hybrid store's garbage collection after a prune).
SELECT_PAYLOAD_REFERENCES = """
    SELECT blob FROM checkpoint_blobs WHERE thread_id = %(thread_id)s AND type = %(type)s
    UNION ALL
    SELECT blob FROM checkpoint_writes WHERE thread_id = %(thread_id)s AND type = %(type)s
"""
# A thread copy: every checkpoint, blob and write, in one snapshot of the source (REPEATABLE READ).
COPY_THREAD = (
    """
    INSERT INTO checkpoints
        (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata
    FROM checkpoints WHERE thread_id = %(source)s
    """,
    """
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(target)s, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs WHERE thread_id = %(source)s
    """,
    """
    INSERT INTO checkpoint_writes
        (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM checkpoint_writes WHERE thread_id = %(source)s
    """,
)
SELECT_LATEST_WHERE = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"


@dataclass(slots=True)
class Statement:
    sql: str
    rows: list[tuple[Any, ...]]
    # Columns of (type, payload bytes) in each row, for statements that carry serialised values.
    payload_columns: tuple[int, int] | None = None


@dataclass(slots=True)
class PendingWrite:
    """Everything one `aput` or `aput_writes` call writes, ready to run in a transaction."""

    thread_id: str
    statements: list[Statement] = field(default_factory=list)


class PayloadStore(Protocol):
    """Where large payloads live instead of PostgreSQL (the hybrid store)."""

    # The `type` of a blob row whose payload is a reference to a stored object.
    reference_type: str

    async def offload(self, write: PendingWrite) -> None:
        """Store large payloads of `write` and replace them by references, before it commits."""

    async def resolve(self, row: DictRow) -> None:
        """Replace references in a checkpoint row read from PostgreSQL by the payloads."""

    async def delete_thread(self, thread_id: str) -> None: ...

    async def retain(self, thread_id: str, references: Sequence[bytes], older_than: datetime) -> None:
        """Delete the thread's objects that none of `references` names and that predate `older_than`."""

    async def copy_thread(self, conn: AsyncConnection[DictRow], source: str, target: str) -> None:
        """Give the rows `conn` just copied from `source` to `target` payloads of their own."""


class PooledPostgresSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` whose queries run concurrently on pooled connections."""

    def __init__(
        self,
        pool: Pool,
        *,
        metrics: Metrics | None = None,
        payloads: PayloadStore | None = None,
        serde: SerializerProtocol | None = None,
        cache_threads: int = 0,
    ) -> None:
        super().__init__(pool, serde=serde)  # type: ignore[arg-type]
        self.pool = pool
        self.metrics = metrics
        self.payloads = payloads
        # The latest checkpoint of threads whose runs execute here (latest.py); 0 threads: off.
        self.latest = LatestCheckpoints(cache_threads, metrics)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        # No lock: each caller has a connection of its own for as long as it needs it.
        async with self.pool.connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        except Exception:
            if self.metrics is not None:
                self.metrics.checkpoint_errors.labels(operation).inc()
            raise
        finally:
            if self.metrics is not None:
                self.metrics.checkpoint_duration.labels(operation).observe(time.perf_counter() - start)

    # Writes: build the rows exactly as the stock saver does, then hand them to _submit.

    def checkpoint_write(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> PendingWrite:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable["checkpoint_ns"]
        # Primitive values stay inline in the checkpoint row, the rest go to checkpoint_blobs.
        inline: dict[str, Any] = {}
        blobs: dict[str, Any] = {}
        for key, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blobs[key] = value
                inline[key] = True
            elif value is None or isinstance(value, str | int | float | bool):
                inline[key] = value
            else:
                blobs[key] = value
        write = PendingWrite(thread_id)
        if blob_versions := {k: v for k, v in new_versions.items() if k in blobs}:
            rows = self._dump_blobs(thread_id, checkpoint_ns, blobs, blob_versions)
            write.statements.append(Statement(self.UPSERT_CHECKPOINT_BLOBS_SQL, list(rows), payload_columns=(4, 5)))
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            Jsonb({**checkpoint, "channel_values": inline}),
            Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
        )
        write.statements.append(Statement(self.UPSERT_CHECKPOINTS_SQL, [row]))
        return write

    def writes_write(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> PendingWrite:
        configurable = config["configurable"]
        sql = (
            self.UPSERT_CHECKPOINT_WRITES_SQL
            if all(channel in WRITES_IDX_MAP for channel, _ in writes)
            else self.INSERT_CHECKPOINT_WRITES_SQL
        )
        rows = self._dump_writes(
            str(configurable["thread_id"]),
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        return PendingWrite(str(configurable["thread_id"]), [Statement(sql, list(rows), payload_columns=(7, 8))])

    async def commit(self, writes: Sequence[PendingWrite]) -> None:
        """Write all of `writes` in one transaction and one round trip.

        Rows are grouped by statement (one executemany each). A row key is always written by
        the same statement, so the order of writes to any one row is kept.
        """
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for write in writes:
            for statement in write.statements:
                grouped.setdefault(statement.sql, []).extend(statement.rows)
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            async with conn.cursor(binary=True) as cur:
                for sql, rows in grouped.items():
                    await cur.executemany(sql, rows)

    async def _submit(self, write: PendingWrite) -> None:
        await self.commit([write])

    async def _store(self, write: PendingWrite) -> None:
        if self.payloads is not None:
            await self.payloads.offload(write)
        await self._submit(write)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        # Serialised on the event loop: for chat-sized states a thread hop costs more than it saves.
        write = self.checkpoint_write(config, checkpoint, metadata, new_versions)
        # Rows as written, before an offload swaps payloads for references.
        rows = [list(statement.rows) for statement in write.statements]
        await self._timed("put", self._store(write))
        if config["configurable"]["checkpoint_ns"] == "":
            checkpoint_row = rows[-1][0]
            blob_rows = rows[0] if len(rows) == 2 else []
            self.latest.put_checkpoint(
                write.thread_id, checkpoint_row, checkpoint_row[4].obj, checkpoint_row[5].obj, blob_rows
            )
        return {
            "configurable": {
                "thread_id": config["configurable"]["thread_id"],
                "checkpoint_ns": config["configurable"]["checkpoint_ns"],
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        write = self.writes_write(config, writes, task_id, task_path)
        rows = list(write.statements[0].rows)
        await self._timed("put_writes", self._store(write))
        configurable = config["configurable"]
        if configurable["checkpoint_ns"] == "":
            upsert = write.statements[0].sql == self.UPSERT_CHECKPOINT_WRITES_SQL
            self.latest.put_writes(write.thread_id, configurable["checkpoint_id"], rows, upsert)

    # Reads and deletes: the stock queries, timed.

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._timed("get_tuple", self._get_tuple(config))

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = str(config["configurable"]["thread_id"])
        if not self.latest.held(thread_id, config["configurable"].get("checkpoint_ns", "")):
            return await super().aget_tuple(config)
        if (cached := self.latest.row(thread_id, get_checkpoint_id(config))) is not None:
            return await self._load_checkpoint_tuple(cached)
        if get_checkpoint_id(config):
            return await super().aget_tuple(config)
        async with self._cursor() as cur:
            await cur.execute(self.SELECT_SQL + SELECT_LATEST_WHERE, (thread_id, ""), binary=True)
            value = await cur.fetchone()
        if value is None:
            return None
        if value["checkpoint"]["v"] < 4:
            return await super().aget_tuple(config)  # an old checkpoint: the stock read migrates it
        if self.payloads is not None:
            await self.payloads.resolve(value)
        self.latest.fill(value)
        return await self._load_checkpoint_tuple(value)

    async def latest_version(self, thread_id: str) -> Latest:
        """The thread's newest root checkpoint ID and its number of pending writes, by one indexed read."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(LATEST_CHECKPOINT, (thread_id,))).fetchone()
        return (None, 0) if row is None else (row["checkpoint_id"], int(row["writes"]))

    async def adelete_thread(self, thread_id: str) -> None:
        self.latest.drop(str(thread_id))
        await self._timed("delete_thread", super().adelete_thread(thread_id))
        # Rows first: a failure in between leaves unreferenced objects, never a row without its object.
        if self.payloads is not None:
            await self.payloads.delete_thread(str(thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """LangGraph's prune, timed: "keep_latest" keeps each namespace's latest checkpoint (and what it reads),
        "delete" removes every checkpoint. With the hybrid store, objects no remaining row names go too."""
        # Objects uploaded after this (by a write racing the prune) are never collected. Object stores keep
        # whole seconds, so a later upload never looks older than the second the prune started in.
        started = datetime.now(UTC).replace(microsecond=0)
        await self._timed("prune", super().aprune(thread_ids, strategy=strategy))
        if self.payloads is None:
            return
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.payloads.delete_thread(thread_id)
                continue
            async with self.pool.connection() as conn:
                params = {"thread_id": thread_id, "type": self.payloads.reference_type}
                rows = await (await conn.execute(SELECT_PAYLOAD_REFERENCES, params, binary=True)).fetchall()
            await self.payloads.retain(thread_id, [bytes(row["blob"]) for row in rows], started)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints the runs wrote, and their writes (a rollback); blobs may be shared, so stay."""
        # Any thread may lose its latest checkpoints: forget them all.
        self.latest.clear()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(DELETE_RUN_WRITES, (list(run_ids),))
            await conn.execute(DELETE_RUN_CHECKPOINTS, (list(run_ids),))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy the whole parent chain (what DeltaChannel reconstruction needs), never a part of it."""
        names = {"source": str(source_thread_id), "target": str(target_thread_id)}

        async def copy() -> None:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                for statement in COPY_THREAD:
                    await conn.execute(statement, names)
                if self.payloads is not None:
                    await self.payloads.copy_thread(conn, names["source"], names["target"])

        await self._timed("copy_thread", copy())

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        if self.payloads is not None:
            await self.payloads.resolve(value)
        # The stock method loads pending writes in a worker thread: for a chat turn's few writes that
        # hop costs more than the loading does, so they load here, on the event loop.
        checkpoint: Checkpoint = value["checkpoint"]
        channel_values = {**(checkpoint.get("channel_values") or {}), **self._load_blobs(value["channel_values"])}
        parent_id = value["parent_checkpoint_id"]
        return CheckpointTuple(
            _config(value["thread_id"], value["checkpoint_ns"], value["checkpoint_id"]),
            {**checkpoint, "channel_values": channel_values},
            value["metadata"],
            _config(value["thread_id"], value["checkpoint_ns"], parent_id) if parent_id else None,
            self._load_writes(value["pending_writes"]),
        )

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        start = time.perf_counter()
        async for item in super().alist(config, filter=filter, before=before, limit=limit):
            yield item
        if self.metrics is not None:
            self.metrics.checkpoint_duration.labels("list").observe(time.perf_counter() - start)


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}
