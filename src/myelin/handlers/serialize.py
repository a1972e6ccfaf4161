"""Turning stored events into the client-server API's event format."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from myelin.events.redaction import prune_event_dict
from myelin.storage.stores.events import StoredEvent

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Fields of a PDU that clients never see.
_FEDERATION_ONLY = ("auth_events", "prev_events", "hashes", "signatures", "depth", "origin",
                    "prev_state", "membership")


class EventSerializer:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.events

    async def serialize(self, events: Sequence[StoredEvent], *, user_id: str | None = None,
                        device_id: str | None = None, event_format: str = "client",
                        only_fields: Sequence[str] | None = None, _depth: int = 0,
                        ) -> list[dict[str, Any]]:
        """Events in the client (or federation) format, with their bundled
        aggregations (``_depth``: how deep inside another event's aggregation
        these are; edits and thread replies nest one level, no more)."""
        if not events:
            return []
        redactions: dict[str, str] = {e.event.event_id: e.redacted_by for e in events
                                      if e.redacted_by}
        needed = set(redactions.values())
        needed.update(e.event.unsigned["replaces_state"] for e in events
                      if "replaces_state" in e.event.unsigned)
        related = await self.store.get_events(needed) if needed else {}
        txn_ids: dict[str, str] = {}
        if user_id is not None and device_id is not None:
            for stored in events:
                sent_by = stored.txn_key
                if sent_by is not None and sent_by[0] == user_id and sent_by[1] == device_id:
                    txn_ids[stored.event.event_id] = sent_by[2]
        bundles: dict[str, dict[str, Any]] = {}
        if _depth < 2:
            bundles = await self.hs.relations.bundle(
                events, user_id, _depth, {"user_id": user_id, "device_id": device_id,
                                          "event_format": event_format})
        now = int(time.time() * 1000)
        out = []
        for stored in events:
            event = stored.event
            pdu = event.shallow_dict()
            redaction_id = redactions.get(event.event_id)
            if redaction_id is not None and redaction_id in related:
                pdu = prune_event_dict(pdu, event.room_version)
                pdu["event_id"], pdu["room_id"] = event.event_id, event.room_id
            unsigned: dict[str, Any] = {"age": max(0, now - event.origin_server_ts)}
            if redaction_id is not None and redaction_id in related:
                unsigned["redacted_because"] = self._client_dict(related[redaction_id], now)
                unsigned["redacted_by"] = redaction_id  # as Synapse (sytest reads it)
            replaces = event.unsigned.get("replaces_state")
            if replaces:
                unsigned["replaces_state"] = replaces
                prev = related.get(replaces)
                if prev is not None:
                    unsigned["prev_content"] = prev.event.content
                    unsigned["prev_sender"] = prev.event.sender
            if event.event_id in txn_ids:
                unsigned["transaction_id"] = txn_ids[event.event_id]
            if event.event_id in bundles:
                unsigned["m.relations"] = bundles[event.event_id]
            if event_format == "client":
                for key in _FEDERATION_ONLY:
                    pdu.pop(key, None)
                _both_redacts(pdu)
            pdu["unsigned"] = unsigned
            if only_fields is not None:
                pdu = _only_fields(pdu, only_fields)
            out.append(pdu)
        return out

    @staticmethod
    def _client_dict(stored: StoredEvent, now: int) -> dict[str, Any]:
        pdu = stored.event.shallow_dict()
        for key in _FEDERATION_ONLY:
            pdu.pop(key, None)
        _both_redacts(pdu)
        pdu["unsigned"] = {"age": max(0, now - stored.event.origin_server_ts)}
        return pdu

    async def serialize_one(self, stored: StoredEvent, **kwargs: Any) -> dict[str, Any]:
        return (await self.serialize([stored], **kwargs))[0]


# What the legacy (r0 "v1") client format repeats top-level from `unsigned`.
_LEGACY_TOP_LEVEL = ("age", "redacted_because", "replaces_state", "prev_content",
                     "invite_room_state", "knock_room_state")


def legacy_client_format(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the legacy endpoints (``/initialSync``, ``/events``) serve
    it: ``user_id`` beside ``sender``, and the ``unsigned`` extras also
    top-level, where clients of those endpoints look for them."""
    out = dict(event)
    if "sender" in out:
        out["user_id"] = out["sender"]
    unsigned = out.get("unsigned")
    if isinstance(unsigned, dict):
        for key in _LEGACY_TOP_LEVEL:
            if key in unsigned:
                out[key] = unsigned[key]
    return out


def _both_redacts(pdu: dict[str, Any]) -> None:
    """Serve a redaction's target both top-level (v1-v10) and in content (v11+),
    as room version 11 asks, so old and new clients both find it."""
    if pdu.get("type") != "m.room.redaction":
        return
    content = pdu.get("content")
    if not isinstance(content, dict):
        return
    redacts = pdu.get("redacts", content.get("redacts"))
    if isinstance(redacts, str):
        pdu["redacts"] = redacts
        if "redacts" not in content:
            pdu["content"] = {**content, "redacts": redacts}


def _only_fields(pdu: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Apply a filter's ``event_fields`` (dotted paths, ``\\.`` escapes a dot)."""
    out: dict[str, Any] = {}
    for field in fields:
        parts = [p.replace("\x00", ".") for p in field.replace("\\.", "\x00").split(".")]
        src: Any = pdu
        for part in parts[:-1]:
            if not isinstance(src, dict) or part not in src:
                src = None
                break
            src = src[part]
        if not isinstance(src, dict) or parts[-1] not in src:
            continue
        dst = out
        for part in parts[:-1]:
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src[parts[-1]]
    return out
