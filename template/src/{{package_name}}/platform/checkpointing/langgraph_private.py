"""Every private LangGraph name this service relies on, in one module: a LangGraph upgrade that moves or
changes one of them breaks this file, at import, and nothing else. Each is named here for what it is.

- DeltaSnapshot: the value a sealed delta channel stores (langgraph.checkpoint.serde.types);
- messages_delta_reducer: add_messages as a delta channel's reducer (langgraph.graph.message);
- the stock Postgres saver's statement-generator helpers behind `keep_latest` and delta history
  (langgraph.checkpoint.postgres.base): its pruning of delta threads, and its stage-2 history SQL.
"""

from __future__ import annotations

from langgraph.checkpoint.postgres.base import (
    PRUNE_DELTA_THREADS_SQL,
)
from langgraph.checkpoint.postgres.base import _aexecute as aexecute_statements
from langgraph.checkpoint.postgres.base import _build_delta_stage2_sql as build_delta_stage2_sql
from langgraph.checkpoint.postgres.base import _keep_latest as keep_latest_statements
from langgraph.checkpoint.postgres.base import _Statements as Statements
from langgraph.checkpoint.serde.types import _DeltaSnapshot as DeltaSnapshot
from langgraph.graph.message import _messages_delta_reducer as messages_delta_reducer

__all__ = [
    "PRUNE_DELTA_THREADS_SQL",
    "DeltaSnapshot",
    "Statements",
    "aexecute_statements",
    "build_delta_stage2_sql",
    "keep_latest_statements",
    "messages_delta_reducer",
]
