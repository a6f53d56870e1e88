"""What a delta channel's history costs to rebuild, kept in memory: decoded snapshots (SnapshotCache) and
the chains of writes since them per thread (ChainCache), so a thread's next turn reads only what is new."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.checkpoint.base import DeltaChannelHistory
from langgraph.checkpoint.base import PendingWrite as PendingWriteTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from .langgraph_private import DeltaSnapshot

# Decoded snapshots and writes kept per process, counted as the memory they take decoded: about 8 times
# their serialised size (LangChain messages, measured with tracemalloc), plus the entry and its key. Counted
# in serialised bytes, the bound let the cache grow to some 250 MB and a replica's RSS with it (make soak).
SNAPSHOT_CACHE_BYTES = 32 * 1024 * 1024
_DECODED_BYTES_PER_BYTE = 8
_ENTRY_BYTES = 512
# Smaller blobs decode faster than they hash.
_SNAPSHOT_CACHE_MIN_BYTES = 4096


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
        size = len(blob) * _DECODED_BYTES_PER_BYTE + _ENTRY_BYTES
        if _cacheable(value) and (not hashed or isinstance(value, DeltaSnapshot)) and size <= self._max_bytes:
            self._entries[key] = (size, _copy(value))
            self._bytes += size
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
            history["seed"] = _copy(self.seed) if isinstance(self.seed, list | DeltaSnapshot) else self.seed
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
    if isinstance(value, DeltaSnapshot):
        return isinstance(value.value, list)
    return isinstance(value, list) and all(isinstance(item, BaseMessage) for item in value)


def _copy(value: Any) -> Any:
    """A fresh list of the same items: a reducer or a node may change the list, not the messages."""
    return DeltaSnapshot(list(value.value)) if isinstance(value, DeltaSnapshot) else list(value)
