"""The write seam: every `aput` and `aput_writes` becomes a PendingWrite (its statements and rows) before
it is committed. The queue (queue.py) changes how pending writes are committed, the hybrid store
(hybrid.py) what they write (a PayloadStore keeps large payloads out of PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg.rows import DictRow


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
