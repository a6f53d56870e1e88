"""The service's checkpoint saver: LangGraph's Postgres saver, made to use the whole pool.

The stock `AsyncPostgresSaver` holds one `asyncio.Lock` around every query, so a pool of
many connections serves one checkpoint query at a time per process. This subclass keeps
the stock schema, migrations, SQL and (de)serialisation, and changes two things:

- every query takes its own pooled connection, with no process-wide lock;
- a write is first turned into a `PendingWrite` (its SQL and rows), then committed in one
  transaction. Subclasses change how it is committed (the group-commit queue) or what is
  written (the hybrid object store) without touching the rest.

Delta channels (LangGraph's `DeltaChannel`, beta) are rebuilt by `aget_delta_channel_history`
from the same tables as the stock saver's, with one recursive query for the ancestor walk and
decoded snapshots kept in a small cache (see `SnapshotCache`). The stock `keep_latest` prune refuses
delta threads, since the ancestors it drops are what rebuilds them; this saver first seals the latest
checkpoint (stores the rebuilt value there as a snapshot, with the graph's own reducers), then prunes.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.base import PendingWrite as PendingWriteTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import (
    PRUNE_DELTA_THREADS_SQL,
    _aexecute,
    _build_delta_stage2_sql,
    _keep_latest,
    _Statements,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from prometheus_client import Histogram
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from ..database import Pool
from ..metrics import Metrics
from .batch import one_statement
from .latest import LATEST_CHECKPOINT, Latest, LatestCheckpoints, Step

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
# Sealing a delta thread's latest checkpoint: its channel now has a stored value (the snapshot blob at
# its version), and the count of updates since the last snapshot starts again.
MARK_SNAPSHOT = """
    UPDATE checkpoints
    SET checkpoint = jsonb_set(checkpoint, array['channel_values', %s], 'true'),
        metadata = metadata #- array['counters_since_delta_snapshot', %s]
    WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s
"""
# Delta channels in subgraph namespaces: their reducers are not the root graph's, so they stay unpruned.
SUBGRAPH_DELTA_THREADS = """
    SELECT DISTINCT thread_id FROM checkpoints
    WHERE thread_id = ANY(%s) AND checkpoint_ns <> ''
      AND (metadata ? 'counters_since_delta_snapshot' OR metadata ? 'delta_writes_versioned')
"""
SELECT_LATEST_WHERE = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"

# A checkpoint holds a stored value for channel `ch`: a blob (a snapshot, or a plain value written
# before the channel became a DeltaChannel) or an inline primitive. The stock saver's test, per row.
_SEEDED = """(
    EXISTS (SELECT 1 FROM checkpoint_blobs b
            WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = %(checkpoint_ns)s AND b.channel = ch
              AND b.version = w.versions ->> ch AND b.type <> 'empty')
    OR coalesce(jsonb_typeof(w.inline_values -> ch), 'null') <> 'null'
)"""
# The ancestors of a checkpoint ('c' rows, `depth` 0 for its parent), each with the channels still
# looking for their stored value (`pending`) and those that found it there (`seeds`: version, in a
# blob?, inline value), and their writes to those channels ('w' rows). The stock saver reads pages of
# 1024 checkpoints to walk the same chain, then the writes in a second query; this is one query.
DELTA_WALK_SQL = f"""
WITH RECURSIVE walk AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint -> 'channel_versions' AS versions,
           c.checkpoint -> 'channel_values' AS inline_values, %(channels)s::text[] AS pending, 0 AS depth
    FROM checkpoints c
    WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = %(checkpoint_ns)s AND c.checkpoint_id = (
        SELECT parent_checkpoint_id FROM checkpoints
        WHERE thread_id = %(thread_id)s AND checkpoint_ns = %(checkpoint_ns)s AND checkpoint_id = %(checkpoint_id)s)
  UNION ALL
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint -> 'channel_versions',
           c.checkpoint -> 'channel_values', left_over.pending, w.depth + 1
    FROM walk w
    CROSS JOIN LATERAL (SELECT array(SELECT ch FROM unnest(w.pending) ch WHERE NOT {_SEEDED}) AS pending) left_over
    -- LATERAL ... LIMIT 1: one primary-key lookup per step (a plain join lets the planner scan
    -- the whole thread at every step when a young table's statistics say it is tiny).
    CROSS JOIN LATERAL (
        SELECT * FROM checkpoints p
        WHERE p.thread_id = %(thread_id)s AND p.checkpoint_ns = %(checkpoint_ns)s
          AND p.checkpoint_id = w.parent_checkpoint_id
        LIMIT 1
    ) c
    -- Nor past `stop`: the target of an earlier walk, whose own ancestors are known (ChainCache).
    WHERE cardinality(left_over.pending) > 0 AND w.checkpoint_id IS DISTINCT FROM %(stop)s::text
),
steps AS MATERIALIZED (
    SELECT w.checkpoint_id, w.pending, w.depth,
           (SELECT jsonb_object_agg(ch, jsonb_build_array(w.versions ->> ch, EXISTS (
                      SELECT 1 FROM checkpoint_blobs b
                      WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = %(checkpoint_ns)s AND b.channel = ch
                        AND b.version = w.versions ->> ch AND b.type <> 'empty'), w.inline_values -> ch))
            FROM unnest(w.pending) ch WHERE {_SEEDED}) AS seeds
    FROM walk w
)
SELECT 'c'::text AS _kind, s.checkpoint_id, NULL::text AS channel, NULL::text AS type, NULL::bytea AS blob,
       NULL::text AS task_id, NULL::text AS task_path, NULL::int AS idx, s.pending, s.seeds, s.depth
FROM steps s
UNION ALL
-- Each step's writes to the channels it is on the chain of: the stock saver's second query, joined.
SELECT 'w', cw.checkpoint_id, cw.channel, cw.type, cw.blob, cw.task_id, cw.task_path, cw.idx, NULL, NULL, NULL
FROM steps s CROSS JOIN LATERAL unnest(s.pending) ch
CROSS JOIN LATERAL (
    SELECT * FROM checkpoint_writes x
    WHERE x.thread_id = %(thread_id)s AND x.checkpoint_ns = %(checkpoint_ns)s
      AND x.checkpoint_id = s.checkpoint_id AND x.channel = ch
    OFFSET 0
) cw
"""
# Decoded snapshots kept per process, counted in serialised bytes.
SNAPSHOT_CACHE_BYTES = 32 * 1024 * 1024
# Smaller blobs decode faster than they hash.
_SNAPSHOT_CACHE_MIN_BYTES = 4096


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

    async def resolve_values(self, values: list[list[Any]]) -> None:
        """Replace references in [type, payload] pairs (bytes) by the payloads' own type and bytes."""

    async def delete_thread(self, thread_id: str) -> None: ...

    async def retain(self, thread_id: str, references: Sequence[bytes], older_than: datetime) -> None:
        """Delete the thread's objects that none of `references` names and that predate `older_than`."""

    async def copy_thread(self, conn: AsyncConnection[DictRow], source: str, target: str) -> None:
        """Give the rows `conn` just copied from `source` to `target` payloads of their own."""


class SnapshotCache:
    """Decoded delta-channel snapshots and message writes, least recently used first out.

    A long thread's snapshot holds its whole message list, and every turn (and every state of a
    history page) after it starts from it: decoding it once instead of each time is what keeps a
    turn's cost flat. Keyed by content, or by where the walk found the seed: (thread, namespace,
    channel, version, checkpoint ID); checkpoint IDs never repeat, so a deleted and recreated thread
    cannot read a stale entry, and a cached seed is not even fetched from the database. Writes are
    keyed by their row's key (thread, namespace, checkpoint ID, task, index): the writes replayed
    after a snapshot are shared by every later state. Each hit is a fresh list (the reducer and
    nodes may change it) of the same message objects.
    """

    def __init__(self, max_bytes: int = SNAPSHOT_CACHE_BYTES) -> None:
        self._entries: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, key: Hashable) -> Any:
        if (entry := self._entries.get(key)) is None:
            return None
        self._entries.move_to_end(key)
        return _copy(entry[1])

    def loads(self, serde: SerializerProtocol, type_: str, blob: bytes, key: Hashable | None = None) -> Any:
        """Decode `blob`; `key` names it when known (else its hash does, for snapshots worth hashing)."""
        hashed = key is None
        if key is None:
            if len(blob) < _SNAPSHOT_CACHE_MIN_BYTES:
                return serde.loads_typed((type_, blob))
            key = hashlib.blake2b(blob, digest_size=20, person=type_.encode()[:16]).digest()
        if (hit := self.get(key)) is not None:
            return hit
        value = serde.loads_typed((type_, blob))
        if _cacheable(value) and (not hashed or isinstance(value, _DeltaSnapshot)) and len(blob) <= self._max_bytes:
            self._entries[key] = (len(blob), _copy(value))
            self._bytes += len(blob)
            while self._bytes > self._max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][0]
        return value


@dataclass(slots=True)
class Chain:
    """One channel's ancestor walk from `target`: checkpoint IDs from its parent back to the seed's checkpoint
    (or the root), each one's writes to the channel in replay order, and the seed, if the walk found one."""

    target: str
    ids: list[str]
    writes: list[list[PendingWriteTuple]]
    seeded: bool
    seed: Any = None
    positions: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.positions = {checkpoint_id: n for n, checkpoint_id in enumerate(self.ids)}

    @staticmethod
    def continuing(target: str, ids: list[str], writes: list[list[PendingWriteTuple]], earlier: Chain) -> Chain:
        """The walk from `target` that reached `earlier`'s target: `earlier`'s chain goes on from there."""
        return Chain(target, ids + earlier.ids, writes + earlier.writes, earlier.seeded, earlier.seed)

    def history(self, after: int = -1) -> DeltaChannelHistory:
        """The history of the checkpoint at `after` (-1: the walk's own target): the writes of its
        ancestors on the chain, oldest first, and the seed."""
        writes = [w for n in range(len(self.ids) - 1, after, -1) for w in self.writes[n]]
        history: DeltaChannelHistory = {"writes": writes}
        if self.seeded:
            history["seed"] = _copy(self.seed) if isinstance(self.seed, list | _DeltaSnapshot) else self.seed
        return history


class ChainCache:
    """The latest ancestor walk per thread, namespace and channel, least recently used first out.

    Every checkpoint on a walked chain has the rest of the chain as its own ancestors: parent links never
    change (a prune cuts the chain only below the checkpoint it keeps, which then stores its own value). So
    the older states of a history page, and the turns after a walk, are answered from the newest state's
    walk without a query.
    """

    def __init__(self, max_chains: int = 1024) -> None:
        self._chains: OrderedDict[tuple[str, str, str], Chain] = OrderedDict()
        self._max_chains = max_chains

    def lookup(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, channels: Sequence[str]
    ) -> dict[str, DeltaChannelHistory] | None:
        found: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            chain = self._chains.get((thread_id, checkpoint_ns, channel))
            at = None if chain is None else -1 if chain.target == checkpoint_id else chain.positions.get(checkpoint_id)
            # The seed's own checkpoint stores the value: LangGraph reads it there, not through a walk.
            if chain is None or at is None or (chain.seeded and at == len(chain.ids) - 1):
                return None
            self._chains.move_to_end((thread_id, checkpoint_ns, channel))
            found[channel] = chain.history(at)
        return found

    def get(self, thread_id: str, checkpoint_ns: str, channel: str) -> Chain | None:
        return self._chains.get((thread_id, checkpoint_ns, channel))

    def stop(self, thread_id: str, checkpoint_ns: str, channels: Sequence[str]) -> str | None:
        """Where a new walk for `channels` may stop: the target all their latest walks share (a turn's
        walk then reads only the checkpoints the previous turn added)."""
        targets = {chain.target if (chain := self.get(thread_id, checkpoint_ns, ch)) else None for ch in channels}
        return targets.pop() if len(targets) == 1 else None

    def put(self, thread_id: str, checkpoint_ns: str, channel: str, chain: Chain) -> None:
        self._chains[(thread_id, checkpoint_ns, channel)] = chain
        self._chains.move_to_end((thread_id, checkpoint_ns, channel))
        while len(self._chains) > self._max_chains:
            self._chains.popitem(last=False)

    def drop(self, thread_id: str) -> None:
        for key in [key for key in self._chains if key[0] == thread_id]:
            del self._chains[key]

    def clear(self) -> None:
        self._chains.clear()


def _cacheable(value: Any) -> bool:
    """Snapshots holding lists, and writes of messages: immutable once stored, and costly to decode."""
    if isinstance(value, _DeltaSnapshot):
        return isinstance(value.value, list)
    return isinstance(value, list) and all(isinstance(item, BaseMessage) for item in value)


def _copy(value: Any) -> Any:
    """A fresh list of the same items: a reducer or a node may change the list, not the messages."""
    return _DeltaSnapshot(list(value.value)) if isinstance(value, _DeltaSnapshot) else list(value)


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
        self.snapshots = SnapshotCache()
        # Room for a walk per delta channel (a few) of every thread whose latest checkpoint is kept.
        self.chains = ChainCache(max(1024, 4 * cache_threads))
        self._delta_channels: Mapping[str, DeltaChannel[Any]] = {}
        self._duration_children: dict[str, Histogram] = {}

    @property
    def delta_channels(self) -> Mapping[str, DeltaChannel[Any]]:
        """The compiled graph's delta channels (set once it is compiled): what keep_latest seals with, and
        what the latest checkpoints' trails keep."""
        return self._delta_channels

    @delta_channels.setter
    def delta_channels(self, channels: Mapping[str, DeltaChannel[Any]]) -> None:
        self._delta_channels = channels
        self.latest.keep_trails(frozenset(channels))

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
                self._durations(operation).observe(time.perf_counter() - start)

    def _durations(self, operation: str) -> Histogram:
        # labels() takes a lock and builds its key on every call: several times per turn, so keep the children.
        if (child := self._duration_children.get(operation)) is None:
            assert self.metrics is not None
            child = self._duration_children[operation] = self.metrics.checkpoint_duration.labels(operation)
        return child

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
        """Write all of `writes` atomically in one round trip.

        Rows are grouped by statement. A row key is always written by the same statement, so the order
        of writes to any one row is kept. Checkpoint rows go as one statement (batch.py); anything else
        (a seal's snapshot marks) as one executemany per statement in a transaction.
        """
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for write in writes:
            for statement in write.statements:
                grouped.setdefault(statement.sql, []).extend(statement.rows)
        if batched := one_statement(grouped):
            async with self.pool.connection() as conn:
                await conn.execute(batched[0], batched[1], binary=True)
            return
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            async with conn.cursor(binary=True) as cur:
                for sql, rows in grouped.items():
                    await cur.executemany(sql, rows)

    def _submit(self, write: PendingWrite) -> Awaitable[None]:
        return self.commit([write])

    def _store(self, write: PendingWrite) -> Awaitable[None]:
        # Awaitables, not coroutines of their own: each level would cost every put a frame to suspend and resume.
        return self._submit(write) if self.payloads is None else self._offload_and_submit(write)

    async def _offload_and_submit(self, write: PendingWrite) -> None:
        assert self.payloads is not None
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
        # Rows as written, before an offload swaps payloads for references (nothing else changes them).
        rows = [list(statement.rows) if self.payloads else statement.rows for statement in write.statements]
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
        rows = list(write.statements[0].rows) if self.payloads else write.statements[0].rows
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
        """The thread's newest root checkpoint ID, its number of pending writes and its parent, by one indexed read."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(LATEST_CHECKPOINT, (thread_id,))).fetchone()
        return (
            (None, 0, None) if row is None else (row["checkpoint_id"], int(row["writes"]), row["parent_checkpoint_id"])
        )

    def forget(self, thread_id: str) -> None:
        """Drop what this process keeps of the thread (its latest checkpoint, trail and walks)."""
        self.latest.drop(thread_id)
        self.chains.drop(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        self.forget(str(thread_id))
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
        if strategy == "keep_latest" and self.delta_channels and not isinstance(thread_ids, str):
            await self._timed("prune", self._keep_latest_sealed([str(t) for t in thread_ids]))
        else:
            await self._timed("prune", super().aprune(thread_ids, strategy=strategy))
        # Afterwards: sealing itself reads (and caches) the checkpoints and the chain the prune then changes.
        for thread_id in map(str, thread_ids):
            self.forget(thread_id)
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

    async def _keep_latest_sealed(self, thread_ids: list[str]) -> None:
        """The stock keep_latest, each thread's latest root checkpoint sealed first, so that delta threads
        keep their state. Like the stock prune, it expects no run to write the threads meanwhile."""
        async with self._cursor() as cur:
            await cur.execute(SUBGRAPH_DELTA_THREADS, (thread_ids,))
            if refused := sorted(row["thread_id"] for row in await cur.fetchall()):
                raise NotImplementedError(f"keep_latest can't prune delta channels of subgraphs: {', '.join(refused)}")
        for thread_id in thread_ids:
            await self._seal(thread_id)
            async with self._cursor() as cur, cur.connection.transaction():
                await _aexecute(cur, _without_delta_refusal(_keep_latest(thread_id)))

    async def _seal(self, thread_id: str) -> None:
        """Store the latest root checkpoint's rebuilt delta channels there as snapshots, as LangGraph itself
        does every `snapshot_frequency` updates; the checkpoint then reads without its ancestors. The
        caller (aprune) forgets what this process keeps of the thread, which this changes."""
        head = await self.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        if head is None:
            return
        checkpoint = head.checkpoint
        unsealed = [
            name
            for name in self.delta_channels
            if name in checkpoint["channel_versions"] and name not in checkpoint["channel_values"]
        ]
        if not unsealed:
            return
        history = await self.aget_delta_channel_history(config=head.config, channels=unsealed)
        values: dict[str, Any] = {}
        for name in unsealed:
            # As LangGraph rebuilds a channel on load (pregel/_checkpoint.py `_replay`).
            channel = self.delta_channels[name].from_checkpoint(history[name].get("seed"))
            channel.replay_writes(history[name]["writes"])
            values[name] = _DeltaSnapshot(channel.get())
        versions = {name: checkpoint["channel_versions"][name] for name in unsealed}
        checkpoint_id = head.config["configurable"]["checkpoint_id"]
        blobs = list(self._dump_blobs(thread_id, "", values, versions))
        marks = [(name, name, thread_id, checkpoint_id) for name in unsealed]
        write = PendingWrite(
            thread_id,
            [
                Statement(self.UPSERT_CHECKPOINT_BLOBS_SQL, blobs, payload_columns=(4, 5)),
                Statement(MARK_SNAPSHOT, marks),
            ],
        )
        if self.payloads is not None:
            await self.payloads.offload(write)
        await self.commit([write])

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints the runs wrote, and their writes (a rollback); blobs may be shared, so stay."""
        # Any thread may lose its latest checkpoints: forget them all.
        self.latest.clear()
        self.chains.clear()
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

    def _load_blobs(self, blob_values: list[tuple[bytes, bytes, bytes]]) -> dict[str, Any]:
        return {
            k.decode(): self.snapshots.loads(self.serde, t.decode(), v)
            for k, t, v in blob_values or ()
            if t.decode() != "empty"
        }

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """The stock saver's answer (writes and seed per channel), from one walk query and one read."""
        return await self._timed("delta_history", self._delta_channel_history(config, list(channels)))

    async def _delta_channel_history(
        self, config: RunnableConfig, channels: list[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        if not channels:
            return {}
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            target = await self.aget_tuple(config)
            if target is None:
                return {ch: {"writes": []} for ch in channels}
            checkpoint_id = target.config["configurable"]["checkpoint_id"]
        if (known := self.chains.lookup(thread_id, checkpoint_ns, checkpoint_id, channels)) is not None:
            self._count_walk("memory")
            return known
        trail = self.latest.trail(thread_id, checkpoint_id) if self.latest.held(thread_id, checkpoint_ns) else None
        if trail is not None and self.latest.trail_channels.issuperset(channels):
            if (walked := self._walk_trail(thread_id, checkpoint_id, *trail, channels)) is not None:
                self._count_walk("memory")
                return walked
        self._count_walk("postgres")
        chain_by_ch: dict[str, list[str]] = {ch: [] for ch in channels}
        seed_ver_by_ch: dict[str, str | None] = dict.fromkeys(channels)
        seed_inline_by_ch: dict[str, Any] = {}
        cached: dict[str, Any] = {}
        seed_cid: dict[str, str] = {}

        def seed_key(channel: str) -> Hashable:
            return (thread_id, checkpoint_ns, channel, seed_ver_by_ch[channel], seed_cid[channel])

        walk = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}
        stop = self.chains.stop(thread_id, checkpoint_ns, channels)
        async with self._cursor() as cur:
            await cur.execute(DELTA_WALK_SQL, {**walk, "channels": channels, "stop": stop})
            rows = await cur.fetchall()
            for row in sorted((row for row in rows if row["_kind"] == "c"), key=lambda row: row["depth"]):
                seeds = row["seeds"] or {}
                for ch in row["pending"]:
                    chain_by_ch[ch].append(row["checkpoint_id"])
                    if ch in seeds:
                        version, has_blob, inline = seeds[ch]
                        seed_ver_by_ch[ch], seed_cid[ch] = version, row["checkpoint_id"]
                        if not has_blob:
                            seed_inline_by_ch[ch] = inline
                        elif (hit := self.snapshots.get(seed_key(ch))) is not None:
                            cached[ch] = hit
            rows = [row for row in rows if row["_kind"] == "w"]
            # A snapshot not in the cache yet: read it as the stock saver does.
            with_seed = [ch for ch in channels if seed_ver_by_ch[ch] is not None and ch not in cached]
            if sql := _build_delta_stage2_sql(channels_with_chain=[], channels_with_seed=with_seed):
                params: list[Any] = []
                for ch in with_seed:
                    params += [thread_id, checkpoint_ns, ch, seed_ver_by_ch[ch]]
                await cur.execute(sql, params)
                rows += await cur.fetchall()
        if self.payloads is not None:
            pairs = [[row["type"].encode(), row["blob"]] for row in rows]
            await self.payloads.resolve_values(pairs)
            for row, (type_, blob) in zip(rows, pairs, strict=True):
                row["type"], row["blob"] = bytes(type_).decode(), blob
        # As the stock saver assembles them (oldest first, each checkpoint's writes in their order),
        # with message writes and snapshots decoded through the cache.
        writes_at: dict[tuple[str, str], list[DictRow]] = {}
        for row in rows:
            if row["_kind"] == "w":
                writes_at.setdefault((row["channel"], row["checkpoint_id"]), []).append(row)
        seed_of: dict[str, Any] = dict(seed_inline_by_ch)
        for row in rows:
            ch = row["channel"]
            if row["_kind"] == "b" and row["version"] == seed_ver_by_ch[ch] and row["type"] != "empty":
                seed_of[ch] = self.snapshots.loads(self.serde, row["type"], row["blob"], seed_key(ch))
        seed_of.update(cached)
        history: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            writes: list[list[PendingWriteTuple]] = []
            for cid in chain_by_ch[ch]:
                at = writes_at.get((ch, cid), [])
                at.sort(key=lambda w: writes_sort_key(w["task_path"], w["task_id"], w["idx"]))
                keys = [(thread_id, checkpoint_ns, cid, w["task_id"], w["idx"]) for w in at]
                writes.append(
                    [
                        (w["task_id"], ch, self.snapshots.loads(self.serde, w["type"], w["blob"], key))
                        for w, key in zip(at, keys, strict=True)
                    ]
                )
            earlier = self.chains.get(thread_id, checkpoint_ns, ch)
            ids = chain_by_ch[ch]
            # The walk reached the earlier walk's target: that walk's chain goes on from there.
            if stop and ids[-1:] == [stop] and seed_cid.get(ch) != stop and earlier and earlier.target == stop:
                chain = Chain.continuing(checkpoint_id, ids, writes, earlier)
            else:
                chain = Chain(checkpoint_id, ids, writes, ch in seed_of, seed_of.get(ch))
            self.chains.put(thread_id, checkpoint_ns, ch, chain)
            history[ch] = chain.history()
        return history

    def _count_walk(self, source: str) -> None:
        if self.metrics is not None:
            self.metrics.checkpoint_delta_walks.labels(source).inc()

    def _walk_trail(
        self, thread_id: str, target: str, parent_id: str | None, trail: list[Step], channels: list[str]
    ) -> dict[str, DeltaChannelHistory] | None:
        """The walk DELTA_WALK_SQL makes, over the checkpoints this process wrote, back to a stored value or to
        the target of the previous walk (None: the trail ends before either, so the query must walk)."""
        steps = {step.checkpoint_id: step for step in trail}
        chains: dict[str, Chain] = {}
        for ch in channels:
            earlier = self.chains.get(thread_id, "", ch)
            ids: list[str] = []
            writes: list[list[PendingWriteTuple]] = []
            checkpoint_id = parent_id
            while True:
                if checkpoint_id is None:  # the thread's first checkpoint: nothing stored, nothing written
                    chain = Chain(target, ids, writes, False)
                    break
                if (step := steps.get(checkpoint_id)) is None:
                    return None
                ids.append(checkpoint_id)
                writes.append(self._trail_writes(thread_id, step, ch))
                if (stored := step.stored(ch)) is not None:
                    kind, value = stored
                    if kind == "blob":
                        key = (thread_id, "", ch, step.channel_versions[ch], checkpoint_id)
                        value = self.snapshots.loads(self.serde, value[0].decode(), value[1] or b"", key)
                    chain = Chain(target, ids, writes, True, value)
                    break
                if earlier is not None and earlier.target == checkpoint_id:
                    chain = Chain.continuing(target, ids, writes, earlier)
                    break
                checkpoint_id = step.parent_checkpoint_id
            chains[ch] = chain
        for ch, chain in chains.items():
            self.chains.put(thread_id, "", ch, chain)
        return {ch: chain.history() for ch, chain in chains.items()}

    def _trail_writes(self, thread_id: str, step: Step, channel: str) -> list[PendingWriteTuple]:
        """A step's writes to `channel` in replay order, decoded as a walk's rows are (and cached alike)."""
        rows = sorted(step.writes_to(channel), key=lambda w: writes_sort_key(w[4].decode(), w[0].decode(), int(w[5])))
        writes: list[PendingWriteTuple] = []
        for task_id, _, type_, blob, _, idx in rows:
            key = (thread_id, "", step.checkpoint_id, task_id.decode(), int(idx))
            value = self.snapshots.loads(self.serde, type_.decode(), blob or b"", key)
            writes.append((task_id.decode(), channel, value))
        return writes

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


def _without_delta_refusal(statements: _Statements) -> _Statements:
    """`statements` (the stock keep_latest's) without its refusal of delta threads: theirs are sealed."""
    try:
        sql, params, fetch = next(statements)
        while True:
            rows = [] if sql is PRUNE_DELTA_THREADS_SQL else (yield sql, params, fetch)
            sql, params, fetch = statements.send(rows)
    except StopIteration:
        return


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}
