"""The latest checkpoint of the threads whose runs this process executes, kept in memory.

While a replica holds a thread's run lease nobody else writes the thread's checkpoints, so the
checkpoint this process wrote last is still the latest when its next run starts, and reading it back
from PostgreSQL is a round trip for what the process already has. An entry keeps the rows exactly as
written (serialised), so a hit is decoded by the same code, into fresh objects, as a read of the table.

- `holding(thread_id, latest)` is a run's scope: reads inside it may be served from the entry. `latest`
  is the thread's newest checkpoint ID, its count of pending writes and its parent's ID, read in the
  statement that took the lease; an entry that differs from it is dropped (another process wrote the
  thread meanwhile, or pruned it: a prune keeps the latest checkpoint but cuts its parent link).
- A read of the latest checkpoint inside the scope fills the entry; this process's writes update it.
- Only the root namespace is kept; a fork (a checkpoint whose parent is not the entry) drops the entry.
- An entry also keeps the trail of checkpoints this process wrote before it (`Step`: their stored
  values and writes of the graph's delta channels, `trail_channels`), so the ancestor walk of a delta
  channel, which starts every turn, is answered from memory back to the previous turn's walk (saver.py
  `ChainCache`). Plain channels are left out: each checkpoint stores their whole value.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg.rows import DictRow

from ..core.metrics import Metrics

# The thread whose run the current task executes under its lease; None outside runs.
_held: contextvars.ContextVar[str | None] = contextvars.ContextVar("checkpoint_thread_held", default=None)

# (type, payload) of a blob, and the six columns of a pending write as SELECT_SQL returns them.
Blob = tuple[bytes, bytes | None]
WriteRow = tuple[bytes, bytes, bytes, bytes | None, bytes, bytes]
# The thread's newest checkpoint ID (None: no checkpoint), how many pending writes it has, and its parent.
Latest = tuple[str | None, int, str | None]
# Checkpoints kept on an entry's trail: a turn adds a few, and the walk only goes back to the previous turn.
TRAIL_STEPS = 32

LATEST_CHECKPOINT = """
    SELECT c.checkpoint_id, c.parent_checkpoint_id, (
        SELECT count(*) FROM checkpoint_writes w
        WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = '' AND w.checkpoint_id = c.checkpoint_id
    ) AS writes
    FROM checkpoints c WHERE c.thread_id = %s AND c.checkpoint_ns = '' ORDER BY c.checkpoint_id DESC LIMIT 1
"""


def _json_copy(value: Any) -> bytes:
    # What the JSONB column would hold: every read decodes a fresh copy, as a read of the table does.
    return orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class Step:
    """A root checkpoint this process wrote or read, as an ancestor walk sees it: the values it stores
    (a non-empty blob at the channel's version, or a primitive inline) and its pending writes."""

    checkpoint_id: str
    parent_checkpoint_id: str | None
    channel_versions: dict[str, str]
    blobs: dict[tuple[str, str], Blob]
    inline: dict[str, Any]
    writes: tuple[WriteRow, ...]

    def stored(self, channel: str) -> tuple[str, Any] | None:
        """("blob", (type, payload)) or ("inline", value) when this checkpoint stores `channel`'s value,
        by the stock saver's test (`_SEEDED` in saver.py)."""
        version = self.channel_versions.get(channel)
        blob = None if version is None else self.blobs.get((channel, version))
        if blob is not None and blob[0] != b"empty":
            return "blob", blob
        if self.inline.get(channel) is not None:
            return "inline", self.inline[channel]
        return None

    def writes_to(self, channel: str) -> list[WriteRow]:
        name = channel.encode()
        return [write for write in self.writes if write[1] == name]


@dataclass(slots=True)
class _Entry:
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: bytes
    metadata: bytes
    channel_versions: dict[str, str]
    # The trail channels' primitive values, stored inline in the checkpoint's row.
    inline: dict[str, Any]
    blobs: dict[tuple[str, str], Blob] = field(default_factory=dict)
    writes: dict[tuple[str, int], WriteRow] = field(default_factory=dict)
    # This checkpoint's ancestors, parent last, as far as this process has seen them in a row.
    trail: list[Step] = field(default_factory=list)
    # Every write to this checkpoint is here. A thread's first checkpoint written outside a run's scope may
    # have missed writes that committed before its own put returned (nothing kept them for it).
    whole: bool = True
    # Writes committed for a child checkpoint whose own put has not returned yet (durability="async").
    early: dict[str, list[tuple[Sequence[Any], bool]]] = field(default_factory=dict)

    def add_writes(self, rows: Sequence[Sequence[Any]], upsert: bool) -> None:
        for _, _, _, task_id, task_path, idx, channel, type_, blob in rows:
            key = (task_id, idx)
            if upsert or key not in self.writes:
                self.writes[key] = (
                    task_id.encode(),
                    channel.encode(),
                    type_.encode(),
                    blob,
                    task_path.encode(),
                    str(idx).encode(),
                )

    def step(self, channels: frozenset[str], names: frozenset[bytes]) -> Step:
        """This checkpoint as a walk over `channels` (`names`, encoded) sees it: their values and writes only."""
        return Step(
            self.checkpoint_id,
            self.parent_checkpoint_id,
            self.channel_versions,
            {key: blob for key, blob in self.blobs.items() if key[0] in channels},
            self.inline,
            tuple(write for write in self.writes.values() if write[1] in names),
        )

    def row(self, thread_id: str) -> dict[str, Any]:
        """The row SELECT_SQL would return for this checkpoint."""
        blobs = [
            [channel.encode(), *self.blobs[(channel, version)]]
            for channel, version in self.channel_versions.items()
            if (channel, version) in self.blobs
        ]
        return {
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": self.checkpoint_id,
            "parent_checkpoint_id": self.parent_checkpoint_id,
            "checkpoint": orjson.loads(self.checkpoint),
            "metadata": orjson.loads(self.metadata),
            "channel_values": blobs or None,
            "pending_writes": [list(write) for write in self.writes.values()] or None,
        }


class LatestCheckpoints:
    """Per thread, the latest root checkpoint with its blobs and pending writes; least recently used go first."""

    def __init__(self, max_threads: int, metrics: Metrics | None = None) -> None:
        self._max_threads = max_threads
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # The channels trails keep (the compiled graph's delta channels); none: no trails.
        self.trail_channels: frozenset[str] = frozenset()
        self._trail_names: frozenset[bytes] = frozenset()
        # Writes committed, inside a run's scope, for a thread's first checkpoint before its put returned.
        self._unborn: dict[str, dict[str, list[tuple[Sequence[Any], bool]]]] = {}
        # labels() takes a lock and builds its key on every call: keep the two children.
        self._reads = (
            None
            if metrics is None
            else {result: metrics.checkpoint_cache_reads.labels(result) for result in ("hit", "miss")}
        )

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def holding(self, thread_id: str, latest: Latest | None) -> Iterator[None]:
        """The scope of one run of `thread_id` under its lease (run it in the run's own task)."""
        entry = self._entries.get(thread_id)
        if entry is not None and (
            latest is None or latest != (entry.checkpoint_id, len(entry.writes), entry.parent_checkpoint_id)
        ):
            del self._entries[thread_id]
        token = _held.set(thread_id)
        try:
            yield
        finally:
            _held.reset(token)
            self._unborn.pop(thread_id, None)

    def knows(self, thread_id: str) -> bool:
        return thread_id in self._entries

    def held(self, thread_id: str, checkpoint_ns: str) -> bool:
        return checkpoint_ns == "" and _held.get() == thread_id

    def row(self, thread_id: str, checkpoint_id: str | None) -> dict[str, Any] | None:
        """The cached row of the latest checkpoint (or of `checkpoint_id` when it is the latest)."""
        entry = self._entries.get(thread_id)
        if entry is None or (checkpoint_id is not None and checkpoint_id != entry.checkpoint_id):
            self._count("miss")
            return None
        self._entries.move_to_end(thread_id)
        self._count("hit")
        return entry.row(thread_id)

    def keep_trails(self, channels: frozenset[str]) -> None:
        self.trail_channels = channels
        self._trail_names = frozenset(channel.encode() for channel in channels)

    def trail(self, thread_id: str, checkpoint_id: str) -> tuple[str | None, list[Step]] | None:
        """When `checkpoint_id` is the latest checkpoint: its parent, and the steps this process saw before it."""
        entry = self._entries.get(thread_id)
        if entry is None or entry.checkpoint_id != checkpoint_id:
            return None
        self._entries.move_to_end(thread_id)
        return entry.parent_checkpoint_id, entry.trail

    def fill(self, row: DictRow) -> None:
        """Keep the latest checkpoint just read from PostgreSQL (payloads already resolved)."""
        checkpoint = row["checkpoint"]
        versions = dict(checkpoint.get("channel_versions") or {})
        entry = _Entry(
            checkpoint_id=row["checkpoint_id"],
            parent_checkpoint_id=row["parent_checkpoint_id"],
            checkpoint=_json_copy(checkpoint),
            metadata=_json_copy(row["metadata"]),
            channel_versions=versions,
            inline=self._inline(checkpoint),
        )
        for channel, type_, blob in row["channel_values"] or []:
            name = bytes(channel).decode()
            entry.blobs[(name, versions[name])] = (bytes(type_), None if blob is None else bytes(blob))
        for task_id, channel, type_, blob, task_path, idx in row["pending_writes"] or []:
            write = (bytes(task_id), bytes(channel), bytes(type_), None if blob is None else bytes(blob))
            entry.writes[(write[0].decode(), int(bytes(idx)))] = (*write, bytes(task_path), bytes(idx))
        self._keep(str(row["thread_id"]), entry)

    def put_checkpoint(
        self,
        thread_id: str,
        checkpoint_row: Sequence[Any],
        checkpoint: dict[str, Any],
        metadata: dict[str, Any],
        blob_rows: Sequence[Sequence[Any]],
    ) -> None:
        """This process committed a root checkpoint (rows as the saver wrote them, before any offload)."""
        parent_id: str | None = checkpoint_row[3]
        previous = self._entries.get(thread_id)
        if parent_id is not None and (previous is None or previous.checkpoint_id != parent_id):
            # A fork, or a thread this process has not read: the entry would lack older blobs.
            self._entries.pop(thread_id, None)
            return
        checkpoint_id: str = checkpoint_row[2]
        versions = dict(checkpoint.get("channel_versions") or {})
        blobs: dict[tuple[str, str], Blob] = {}
        trail: list[Step] = []
        if previous is None:
            # The thread's first checkpoint: writes for it and for the next ones may already have committed.
            early = self._unborn.pop(thread_id, None)
        else:
            early = previous.early
            blobs = {key: blob for key, blob in previous.blobs.items() if versions.get(key[0]) == key[1]}
            if self.trail_channels and previous.whole:
                trail = [*previous.trail[1 - TRAIL_STEPS :], previous.step(self.trail_channels, self._trail_names)]
        # Writes may run ahead by more than one checkpoint: those for later ones wait on.
        later = {cid: writes for cid, writes in early.items() if cid > checkpoint_id} if early else {}
        entry = _Entry(
            checkpoint_id,
            parent_id,
            _json_copy(checkpoint),
            _json_copy(metadata),
            versions,
            self._inline(checkpoint),
            blobs,
            {},
            trail,
            previous is not None or _held.get() == thread_id,
            later,
        )
        # Writes committed for this checkpoint before its put returned.
        for rows, upsert in early.get(checkpoint_id, ()) if early else ():
            entry.add_writes(rows, upsert)
        for _, _, channel, version, type_, blob in blob_rows:
            blobs[(channel, version)] = (type_.encode(), blob)
        self._keep(thread_id, entry)

    def put_writes(self, thread_id: str, checkpoint_id: str, rows: Sequence[Sequence[Any]], upsert: bool) -> None:
        """This process committed pending writes: same conflict rule as the SQL (upsert or do nothing)."""
        entry = self._entries.get(thread_id)
        if entry is None:
            if _held.get() == thread_id:  # the thread's first checkpoint may not be in yet
                self._unborn.setdefault(thread_id, {}).setdefault(checkpoint_id, []).append((rows, upsert))
            return
        if entry.checkpoint_id == checkpoint_id:
            entry.add_writes(rows, upsert)
        elif checkpoint_id > entry.checkpoint_id:
            entry.early.setdefault(checkpoint_id, []).append((rows, upsert))
        elif any(row[6] in self.trail_channels for row in rows):
            # A write to an older checkpoint (LangGraph waits for delta channels' writes, so not theirs in
            # practice): the trail's copy of its writes is no longer whole.
            entry.trail = [step for step in entry.trail if step.checkpoint_id > checkpoint_id]

    def _inline(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        values = checkpoint.get("channel_values") or {}
        return {channel: values[channel] for channel in self.trail_channels if channel in values}

    def drop(self, thread_id: str) -> None:
        self._entries.pop(thread_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def _keep(self, thread_id: str, entry: _Entry) -> None:
        if self._max_threads <= 0:
            return
        self._entries[thread_id] = entry
        self._entries.move_to_end(thread_id)
        while len(self._entries) > self._max_threads:
            self._entries.popitem(last=False)

    def _count(self, result: str) -> None:
        if self._reads is not None:
            self._reads[result].inc()
