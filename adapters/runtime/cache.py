"""Resident-adapter bookkeeping: states, refs, pins and least-recently-used eviction.

No torch here: the engine asks ``victims`` which adapters to drop before installing a new one, and
does the dropping itself under its model lock. Adapters in use by a running batch or stream are
pinned and never chosen, so eviction cannot pull an adapter out from under a forward pass.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from adapters.errors import AdaptersError

# The ref of the bare base: a row with it (or None) runs through no adapter. Store names cannot
# start with an underscore, so it never shadows a stored adapter.
BASE = "__base__"
LOADING, READY, FAILED = "LOADING", "READY", "FAILED"  # the states an AdapterInfo reports
K, V = TypeVar("K"), TypeVar("V")


class Bounded(OrderedDict, Generic[K, V]):
    """A dict that keeps at most ``cap`` entries, dropping the oldest written first: for what is
    remembered per name a client chooses (failed loads, lineage), so endless distinct names
    cannot grow memory."""

    def __init__(self, cap: int):
        if cap < 1:
            raise ValueError("cap must be positive")
        super().__init__()
        self.cap = cap

    def __setitem__(self, key, value) -> None:
        if key in self:
            self.move_to_end(key)
        super().__setitem__(key, value)
        while len(self) > self.cap:
            self.popitem(last=False)


class CacheFullError(AdaptersError, RuntimeError):
    """Every resident adapter is in use, so none can be evicted to make room."""


@dataclass
class AdapterInfo:
    """What ``Engine.adapters()`` reports for one adapter (a snapshot; it does not change later)."""

    ref: str
    state: str
    name: str | None = None  # internal name, derived from the content
    task: str | None = None  # "causal-lm" | "classification"
    method: str | None = None  # "lora" | "prefix"
    labels: list[str] | None = None
    bytes: int = 0
    path: str | None = None
    refs: list[str] = field(default_factory=list)  # every ref that resolved to this content
    error: str | None = None
    virtual_tokens: int = 0  # a prefix adapter's virtual tokens: they take positions of the context


@dataclass
class Entry:
    info: AdapterInfo
    resident: Any = None  # the engine's objects for this adapter (engine.Resident)
    pins: int = 0
    doomed: bool = False  # unload asked while pinned: drop at the last unpin


class LRU:
    """Entries by internal name, least recently used first."""

    def __init__(self, max_count: int, max_bytes: int):
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_adapters and max_bytes must be positive")
        self.max_count, self.max_bytes = max_count, max_bytes
        self.entries: OrderedDict[str, Entry] = OrderedDict()

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def touch(self, name: str) -> None:
        self.entries.move_to_end(name)

    def add(self, name: str, entry: Entry) -> None:
        self.entries[name] = entry

    def pop(self, name: str) -> Entry | None:
        return self.entries.pop(name, None)

    @property
    def total_bytes(self) -> int:
        return sum(e.info.bytes for e in self.entries.values())

    def victims(self, incoming_bytes: int) -> list[str]:
        """Names to evict (oldest first) so that one more adapter of ``incoming_bytes`` fits."""
        if incoming_bytes > self.max_bytes:
            raise CacheFullError(f"the adapter needs {incoming_bytes} bytes, more than max_bytes={self.max_bytes}",
                                 "raise the engine's max_bytes")
        count, size = len(self.entries), self.total_bytes
        chosen = []
        for name, entry in self.entries.items():
            if count + 1 <= self.max_count and size + incoming_bytes <= self.max_bytes:
                break
            if entry.pins or entry.info.state != READY:
                continue
            chosen.append(name)
            count, size = count - 1, size - entry.info.bytes
        if count + 1 > self.max_count or size + incoming_bytes > self.max_bytes:
            raise CacheFullError(
                f"cannot make room for another adapter: {count} resident ({size} bytes) are in use",
                "raise max_adapters / max_bytes, or send fewer distinct adapters at once")
        return chosen

    def snapshot(self) -> list[AdapterInfo]:
        return [replace(e.info, refs=list(e.info.refs)) for e in self.entries.values()]
