"""A batch of checkpoint rows as one statement: the stock saver's upserts, each over one JSON array.

The stock saver sends one statement per row inside a transaction: BEGIN, N inserts, COMMIT. Here a batch
of blobs, checkpoints and writes is one statement of data-modifying CTEs, atomic on its own, so a turn's
checkpoint writes cost one statement each flush, whatever their rows. Each table's rows go as one JSON
array and their payloads as one bytea array: psycopg adapts parameters in Python, element by element for
arrays (and escapes each text element), so a few parameters cost less than a column array each. The JSON
is made by `json.dumps`, the encoder psycopg's `Jsonb` uses, so a batch takes and refuses what a row would.

One statement cannot upsert a row twice, so each key keeps what the stock statements, run in order, would
have left: DO NOTHING keeps the first row, DO UPDATE the first row's other columns with the last row's
updated ones. A key in both writes statements (they share the table) goes the transactional way instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from langgraph.checkpoint.postgres.base import BasePostgresSaver

# A table's JSON rows, each paired with its payload (both arrays are made from the same rows).
_WITH_PAYLOADS = "ROWS FROM (jsonb_array_elements(%s::jsonb), unnest(%b::bytea[])) AS batch(r, payload)"
_BLOBS = f"""
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, payload FROM {_WITH_PAYLOADS}
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
"""
_CHECKPOINTS = """
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
    SELECT r->>0, r->>1, r->>2, r->>3, r->4, r->5 FROM jsonb_array_elements(%s::jsonb) AS batch(r)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
    DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
"""
_WRITES = f"""
    INSERT INTO checkpoint_writes
        (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, (r->>5)::integer, r->>6, r->>7, payload FROM {_WITH_PAYLOADS}
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
"""
_WRITE_KEY = itemgetter(0, 1, 2, 3, 5)


@dataclass(frozen=True, slots=True)
class RowUpsert:
    """A stock statement over a batch's rows: its INSERT, its conflict key, the column DO UPDATE starts
    setting from (the rest of the row; None: DO NOTHING), and the bytea column sent apart if any."""

    sql: str
    key: Callable[[tuple[Any, ...]], Any]
    updates: int | None
    payload: int | None

    def unique(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        kept: dict[Any, tuple[Any, ...]] = {}
        for row in rows:
            key = self.key(row)
            if (first := kept.get(key)) is None:
                kept[key] = row
            elif self.updates is not None:
                kept[key] = (*first[: self.updates], *row[self.updates :])
        return list(kept.values())

    def params(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if self.payload is None:  # checkpoints: their JSON columns hold Jsonb wrappers
            return [_json([(*row[:4], row[4].obj, row[5].obj) for row in rows])]
        return [_json([row[: self.payload] for row in rows]), [row[self.payload] for row in rows]]


# The stock statements (by their SQL) in a fixed order, so a batch's statement is one of a few prepared
# ones; anything else goes the transactional way.
UPSERTS: dict[str, RowUpsert] = {
    BasePostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL: RowUpsert(_BLOBS, itemgetter(0, 1, 2, 3), None, 5),
    BasePostgresSaver.UPSERT_CHECKPOINTS_SQL: RowUpsert(_CHECKPOINTS, itemgetter(0, 1, 2), 4, None),
    BasePostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL: RowUpsert(
        _WRITES + "DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob",
        _WRITE_KEY,
        6,
        8,
    ),
    BasePostgresSaver.INSERT_CHECKPOINT_WRITES_SQL: RowUpsert(_WRITES + "DO NOTHING", _WRITE_KEY, None, 8),
}


def one_statement(grouped: dict[str, list[tuple[Any, ...]]]) -> tuple[str, list[Any]] | None:
    """The rows grouped by stock statement as one statement and its parameters; None when a group is not
    a stock row upsert, or a key is in both writes statements."""
    if not grouped or any(sql not in UPSERTS for sql in grouped):
        return None
    upserted = grouped.get(BasePostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL)
    inserted = grouped.get(BasePostgresSaver.INSERT_CHECKPOINT_WRITES_SQL)
    if upserted and inserted and not set(map(_WRITE_KEY, upserted)).isdisjoint(map(_WRITE_KEY, inserted)):
        return None
    parts: list[str] = []
    params: list[Any] = []
    for sql, upsert in UPSERTS.items():
        if rows := grouped.get(sql):
            parts.append(upsert.sql)
            params += upsert.params(upsert.unique(rows))
    *ctes, last = parts
    # Data-modifying CTEs: every one runs to completion, in one statement's transaction.
    with_ = ", ".join(f"batch_{n} AS ({cte})" for n, cte in enumerate(ctes))
    return (f"WITH {with_} {last}" if ctes else last), params


def _json(rows: list[Any]) -> str:
    return json.dumps(rows, ensure_ascii=False)
