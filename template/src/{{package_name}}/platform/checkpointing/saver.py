"""The service's checkpoint saver: LangGraph's Postgres saver on the shared pool, timed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from ..metrics import Metrics

T = TypeVar("T")


class InstrumentedPostgresSaver(AsyncPostgresSaver):
    """Records latency and errors of every operation the graph performs."""

    metrics: Metrics | None = None

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

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._timed("get_tuple", super().aget_tuple(config))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._timed("put", super().aput(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._timed("put_writes", super().aput_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._timed("delete_thread", super().adelete_thread(thread_id))

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
