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

import time
from collections.abc import AsyncIterator, Awaitable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

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
from langgraph.checkpoint.serde.base import SerializerProtocol
from prometheus_client import Histogram
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from ..core.database import Pool
from ..core.metrics import Metrics
from .batch import one_statement
from .history import SNAPSHOT_CACHE_BYTES, Chain, ChainCache, SnapshotCache
from .langgraph_private import (
    PRUNE_DELTA_THREADS_SQL,
    DeltaSnapshot,
    Statements,
    aexecute_statements,
    build_delta_stage2_sql,
    keep_latest_statements,
)
from .latest import LATEST_CHECKPOINT, Latest, LatestCheckpoints, Step
from .pipeline import PayloadStore, PendingWrite, Statement
from .sql import (
    COPY_THREAD,
    DELETE_RUN_CHECKPOINTS,
    DELETE_RUN_WRITES,
    MARK_SNAPSHOT,
    SELECT_DELTA_WALK,
    SELECT_LATEST_WHERE,
    SELECT_PAYLOAD_REFERENCES,
    SELECT_SUBGRAPH_DELTA_THREADS,
)

T = TypeVar("T")


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
        cache_bytes: int = SNAPSHOT_CACHE_BYTES,
    ) -> None:
        super().__init__(pool, serde=serde)  # type: ignore[arg-type]
        self.pool = pool
        self.metrics = metrics
        self.payloads = payloads
        # The latest checkpoint of threads whose runs execute here (latest.py); 0 threads: off.
        self.latest = LatestCheckpoints(cache_threads, metrics)
        self.snapshots = SnapshotCache(cache_bytes)
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
            if isinstance(value, DeltaSnapshot):
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

    async def _settle(self, thread_id: str | None) -> None:
        """Commit what is still pending for `thread_id` (None: for every thread) before a read or a delete
        sees the tables. Writes here commit before they return, so nothing is; the queue's are batched."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        await self._settle(str(config["configurable"]["thread_id"]))
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
        # A write still pending would otherwise bring the thread back after the delete.
        await self._settle(str(thread_id))
        self.forget(str(thread_id))
        await self._timed("delete_thread", super().adelete_thread(thread_id))
        # Rows first: a failure in between leaves unreferenced objects, never a row without its object.
        if self.payloads is not None:
            await self.payloads.delete_thread(str(thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """LangGraph's prune, timed: "keep_latest" keeps each namespace's latest checkpoint (and what it reads),
        "delete" removes every checkpoint. With the hybrid store, objects no remaining row names go too."""
        # Like a delete: a write still pending would otherwise land after the prune and outlive it.
        for thread_id in map(str, thread_ids):
            await self._settle(thread_id)
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
            await cur.execute(SELECT_SUBGRAPH_DELTA_THREADS, (thread_ids,))
            if refused := sorted(row["thread_id"] for row in await cur.fetchall()):
                raise NotImplementedError(f"keep_latest can't prune delta channels of subgraphs: {', '.join(refused)}")
        for thread_id in thread_ids:
            await self._seal(thread_id)
            async with self._cursor() as cur, cur.connection.transaction():
                await aexecute_statements(cur, _without_delta_refusal(keep_latest_statements(thread_id)))

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
            values[name] = DeltaSnapshot(channel.get())
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
        # Pending writes of these runs must land first, or they would outlive the rollback.
        await self._settle(None)
        # Any thread may lose its latest checkpoints: forget them all.
        self.latest.clear()
        self.chains.clear()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(DELETE_RUN_WRITES, (list(run_ids),))
            await conn.execute(DELETE_RUN_CHECKPOINTS, (list(run_ids),))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy the whole parent chain (what DeltaChannel reconstruction needs), never a part of it."""
        # The copy must hold every write the source has been acknowledged for.
        await self._settle(str(source_thread_id))
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
        await self._settle(str(config["configurable"]["thread_id"]))
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
        # The walks the query stops at, taken now: a concurrent read of the thread may replace them in the
        # cache while the query runs, and the walk, cut at `stop`, goes on only through these.
        earlier_by_ch = {ch: self.chains.get(thread_id, checkpoint_ns, ch) for ch in channels}
        async with self._cursor() as cur:
            await cur.execute(SELECT_DELTA_WALK, {**walk, "channels": channels, "stop": stop})
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
            if sql := build_delta_stage2_sql(channels_with_chain=[], channels_with_seed=with_seed):
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
            earlier = earlier_by_ch[ch]
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
        """The walk SELECT_DELTA_WALK makes, over the checkpoints this process wrote, back to a stored value or to
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
        thread_id = (config or {}).get("configurable", {}).get("thread_id")
        await self._settle(None if thread_id is None else str(thread_id))
        start = time.perf_counter()
        async for item in super().alist(config, filter=filter, before=before, limit=limit):
            yield item
        if self.metrics is not None:
            self.metrics.checkpoint_duration.labels("list").observe(time.perf_counter() - start)


def _without_delta_refusal(statements: Statements) -> Statements:
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
