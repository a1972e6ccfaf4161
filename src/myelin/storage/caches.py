"""Named per-process caches, and the one way they are invalidated.

Every cache is a :class:`Cache`: bounded (LRU), named, counted (hits,
misses, size for metrics) and registered in a :class:`CacheRegistry`, so an
invalidation can name it. Invalidations are never done by hand in a
servlet or handler: they come from stream rows — the ``caches`` stream
(:class:`CacheInvalidationStore` writes a row, every process applies it) or
rows of the data streams themselves (an ``events`` row invalidates the
memberships and current state of its room) — and every process applies them,
the writer included, after the commit.

A load that races an invalidation must not be stored: callers read
``cache.generation`` before loading and pass it to :meth:`Cache.put_if`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

import orjson

from myelin.storage.engines import Database
from myelin.storage.id_generators import StreamIdGenerator
from myelin.storage.stream_rows import CachesRow

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: Any = object()

# Write a ``caches`` row (cache name, keys) and wait until this process applied it.
Invalidate = Callable[[str, list[Any] | None], Awaitable[None]]


class Cache(Generic[K, V]):
    def __init__(self, name: str, max_size: int) -> None:
        self.name = name
        self.max_size = max_size
        self._data: OrderedDict[K, V] = OrderedDict()
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K, default: Any = None) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def put_if(self, generation: int, key: K, value: V) -> None:
        """Store a loaded value unless an invalidation happened since the load began."""
        if generation == self.generation:
            self.put(key, value)

    def invalidate(self, key: K) -> None:
        self.generation += 1
        self._data.pop(key, None)

    def invalidate_where(self, predicate: Any) -> None:
        self.generation += 1
        for key in [k for k, v in self._data.items() if predicate(k, v)]:
            del self._data[key]

    def clear(self) -> None:
        self.generation += 1
        self._data.clear()

    def peek(self, key: K) -> Any:
        """The cached value without counting a hit or a miss (None if absent)."""
        return self._data.get(key)


class CacheRegistry:
    def __init__(self) -> None:
        self.caches: dict[str, Cache[Any, Any]] = {}
        # Invalidations that are not "drop these keys" (e.g. every token of a user).
        self._custom: dict[str, Callable[[list[Any] | None], None]] = {}

    def register_invalidator(self, name: str, apply: Callable[[list[Any] | None], None]) -> None:
        self._custom[name] = apply

    def register(self, name: str, max_size: int) -> Cache[Any, Any]:
        if name in self.caches:
            raise ValueError(f"cache {name} registered twice")
        cache: Cache[Any, Any] = Cache(name, max_size)
        self.caches[name] = cache
        return cache

    def invalidate(self, name: str, keys: list[Any] | None) -> None:
        """Apply one ``caches`` row: drop ``keys`` (a key is a list for tuple
        keys) from the named cache, or all of it when ``keys`` is None."""
        custom = self._custom.get(name)
        if custom is not None:
            custom(keys)
            return
        cache = self.caches.get(name)
        if cache is None:
            return
        if keys is None:
            cache.clear()
            return
        for key in keys:
            cache.invalidate(tuple(key) if isinstance(key, list) else key)

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: {"size": len(c), "hits": c.hits, "misses": c.misses}
                for name, c in sorted(self.caches.items())}


class CacheInvalidationStore:
    """Writes rows on the ``caches`` stream (every process may)."""

    def __init__(self, db: Database, id_gen: StreamIdGenerator, instance_name: str) -> None:
        self.db = db
        self.id_gen = id_gen
        self.instance_name = instance_name

    async def invalidate(self, cache_name: str, keys: Iterable[Any] | None) -> int:
        encoded = orjson.dumps(None if keys is None else list(keys)).decode()
        async with self.id_gen.transaction() as ptxn:
            position = await ptxn.next_position()
            await ptxn.txn.execute(
                "INSERT INTO cache_invalidation_stream (stream_id, instance_name, cache_name,"
                " keys, invalidation_ts) VALUES (?, ?, ?, ?, ?)",
                position, self.instance_name, cache_name, encoded, int(time.time() * 1000))
            ptxn.add_row(position, CachesRow(cache_name, encoded))
        return position


def decode_keys(row: CachesRow) -> list[Any] | None:
    value = orjson.loads(row.keys)
    return value if value is None else list(value)
