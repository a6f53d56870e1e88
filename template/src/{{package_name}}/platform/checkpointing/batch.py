"""A batch of checkpoint rows as one statement: the stock saver's upserts, each over arrays (unnest).

The stock saver sends one statement per row inside a transaction: BEGIN, N inserts, COMMIT. Here a batch
of blobs, checkpoints and writes is one statement of data-modifying CTEs, atomic on its own, so a turn's
checkpoint writes cost one statement each flush, whatever their rows. One statement cannot upsert a row
twice, so each key keeps the row a sequence of statements would have left: the last for DO UPDATE, the
first for DO NOTHING.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.postgres.base import BasePostgresSaver


@dataclass(frozen=True, slots=True)
class RowUpsert:
    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    # The conflict target's columns (positions in `columns`), and what a conflict does.
    key: tuple[int, ...]
    on_conflict: str

    @property
    def keeps_last(self) -> bool:
        return "DO UPDATE" in self.on_conflict

    def unique(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        kept: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            key = tuple(row[i] for i in self.key)
            if self.keeps_last or key not in kept:
                kept[key] = row
        return list(kept.values())

    def sql(self) -> str:
        arrays = ", ".join(f"%s::{kind}[]" for kind in self.types)
        return f"INSERT INTO {self.table} ({', '.join(self.columns)}) SELECT * FROM unnest({arrays}) {self.on_conflict}"


_BLOB_KEY = "ON CONFLICT (thread_id, checkpoint_ns, channel, version)"
_WRITE_KEY = "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)"
_WRITE_COLUMNS = (
    *("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path"),
    *("idx", "channel", "type", "blob"),
)
_WRITE_TYPES = ("text", "text", "text", "text", "text", "integer", "text", "text", "bytea")

# The stock statements (by their SQL) and their array forms; anything else goes the transactional way.
UPSERTS: dict[str, RowUpsert] = {
    BasePostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL: RowUpsert(
        "checkpoint_blobs",
        ("thread_id", "checkpoint_ns", "channel", "version", "type", "blob"),
        ("text", "text", "text", "text", "text", "bytea"),
        (0, 1, 2, 3),
        f"{_BLOB_KEY} DO NOTHING",
    ),
    BasePostgresSaver.UPSERT_CHECKPOINTS_SQL: RowUpsert(
        "checkpoints",
        ("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "checkpoint", "metadata"),
        ("text", "text", "text", "text", "jsonb", "jsonb"),
        (0, 1, 2),
        "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)"
        " DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata",
    ),
    BasePostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL: RowUpsert(
        "checkpoint_writes",
        _WRITE_COLUMNS,
        _WRITE_TYPES,
        (0, 1, 2, 3, 5),
        f"{_WRITE_KEY} DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob",
    ),
    BasePostgresSaver.INSERT_CHECKPOINT_WRITES_SQL: RowUpsert(
        "checkpoint_writes", _WRITE_COLUMNS, _WRITE_TYPES, (0, 1, 2, 3, 5), f"{_WRITE_KEY} DO NOTHING"
    ),
}


def one_statement(grouped: dict[str, list[tuple[Any, ...]]]) -> tuple[str, list[list[Any]]] | None:
    """The rows grouped by stock statement as one statement and its parameters (a column array each);
    None when a group is not a stock row upsert."""
    if not grouped or any(sql not in UPSERTS for sql in grouped):
        return None
    parts: list[str] = []
    params: list[list[Any]] = []
    for sql, rows in grouped.items():
        upsert = UPSERTS[sql]
        unique = upsert.unique(rows)
        parts.append(upsert.sql())
        params.extend([row[i] for row in unique] for i in range(len(upsert.columns)))
    if len(parts) == 1:
        return parts[0], params
    # Data-modifying CTEs: every one runs to completion, in one statement's transaction.
    ctes = ", ".join(f"w{n} AS ({part} RETURNING 1)" for n, part in enumerate(parts))
    return f"WITH {ctes} SELECT 1", params
