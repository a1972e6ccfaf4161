"""What else is written in the same transaction as each persisted event.

Relations, search text, push actions…: each feature that keeps a table
derived from events registers an :class:`EventIndexer` here. The persister
(``handlers/events.py``) calls every indexer for every event inside the
event's own transaction, so the derived rows exist exactly when the event
does: a crash never leaves an event without its relation row, and a failed
indexer rolls the event back (so indexers must not raise for odd but valid
events — ignore what does not concern them).

Indexers run on the room's persister, under its room lock, with the state
after the event. Keep them cheap: one or two statements per event, deferred
(``txn.defer``) where nothing later in the transaction reads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.events.event import Event
    from myelin.storage.engines.base import Transaction


class EventIndexer(Protocol):
    async def index_event(self, txn: Transaction, event: Event,
                          state_after: Mapping[tuple[str, str], str], position: int) -> None:
        """Write this feature's rows for ``event`` (stream ``position``).

        ``state_after`` is the room state after the event, read-only and only
        valid during the call."""


# "module:factory" — each factory takes the HomeServer and returns an indexer.
INDEXERS: list[str] = [
    "myelin.handlers.push_actions:indexer",
    "myelin.handlers.relations:indexer",
    "myelin.handlers.search:search_indexer",
]


def load_indexers(hs: HomeServer) -> list[EventIndexer]:
    indexers: list[EventIndexer] = []
    for spec in INDEXERS:
        module_name, _, factory = spec.partition(":")
        indexers.append(getattr(importlib.import_module(module_name), factory)(hs))
    return indexers
