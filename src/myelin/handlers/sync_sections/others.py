"""The sections of ``/sync`` outside rooms: presence, global account data
(and push rules), to-device messages, device lists, and one-time key counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.handlers.sync_sections import SyncSection, users_sharing_rooms

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer
    from myelin.handlers.sync import SyncRequest, SyncResult

TO_DEVICE_LIMIT = 100


class PresenceSection(SyncSection):
    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        events = await self._presence(req, result.rooms_joined, result.newly_joined,
                                      result.new_members)
        result.body["presence"] = {"events": events}
        result.has_updates = result.has_updates or bool(events)

    async def _presence(self, req: SyncRequest, joined_ids: list[str], newly_joined: set[str],
                        new_members: set[str]) -> list[dict[str, Any]]:
        f = req.filter.presence
        if f.blocks_everything or not f.allows_type("m.presence"):
            return []
        store = self.hs.stores.presence
        # Users the client newly shares a room with: their presence as it is,
        # changed or not (the client has never been told it).
        newly_visible = set(new_members)
        if req.since is not None:
            for room_id in newly_joined:
                newly_visible.update(
                    m.user_id for m in await self.hs.stores.memberships.get_members(room_id))
        newly_visible.discard(req.user_id)
        if not req.moved("presence") and not newly_visible:
            return []
        if req.since is None:
            changed = await store.all_active()
        elif req.moved("presence"):
            changed = await store.changed_between(req.since["presence"], req.now["presence"])
        else:
            changed = []
        seen = {s.user_id for s in changed}
        extra = await store.get(sorted(newly_visible - seen)) if newly_visible - seen else {}
        changed = [*changed, *extra.values()]
        if not changed:
            return []
        visible = await users_sharing_rooms(self.hs.stores.memberships, req.user_id,
                                            joined_ids)
        return [{"type": "m.presence", "sender": s.user_id,
                 "content": self.hs.presence.format(s)}
                for s in changed if s.user_id in visible and f.allows("m.presence", s.user_id)]


class AccountDataSection(SyncSection):
    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        events = await self._global_account_data(req)
        result.body["account_data"] = {"events": events}
        result.has_updates = result.has_updates or bool(events)

    async def _global_account_data(self, req: SyncRequest) -> list[dict[str, Any]]:
        f = req.filter.account_data
        if f.blocks_everything:
            return []
        events: list[dict[str, Any]] = []
        if req.moved("account_data"):
            since = None if req.since is None else req.since["account_data"]
            changed = await self.hs.stores.account_data.changed_since(
                req.user_id, since, req.now["account_data"])
            events = [{"type": t, "content": c} for t, c in changed.get("", {}).items()
                      if f.allows_type(t) and t != "m.push_rules"]
        # Push rules live in their own stream; they are sent as account data.
        if f.allows_type("m.push_rules") and (req.since is None or (req.moved("push_rules") and
                                              await self.hs.push_rules.changed_between(
                                                  req.user_id, req.since["push_rules"],
                                                  req.now["push_rules"]))):
            events.append({"type": "m.push_rules",
                           "content": {"global": await self.hs.push_rules.get_ruleset(
                               req.user_id)}})
        return events


class ToDeviceSection(SyncSection):
    def __init__(self, hs: HomeServer) -> None:
        super().__init__(hs)
        # (user, device) -> to-device position already deleted as acknowledged
        self._acked_to_device: dict[tuple[str, str], int] = {}

    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        events, reached = await self._to_device(req)
        result.body["to_device"] = {"events": events}
        if reached is not None:
            result.next_batch = result.next_batch.copy_with("to_device", reached)
        result.has_updates = result.has_updates or bool(events)

    async def _to_device(self, req: SyncRequest) -> tuple[list[dict[str, Any]], int | None]:
        device_id = req.requester.device_id
        if not device_id:
            return [], None
        store = self.hs.stores.to_device
        since = req.since["to_device"] if req.since else 0
        key = (req.user_id, device_id)
        if since > self._acked_to_device.get(key, 0):
            # The client has seen everything up to `since`: it is acknowledged.
            await store.delete_up_to(req.user_id, device_id, since)
            self._acked_to_device[key] = since
        if not req.moved("to_device"):
            return [], None
        messages, reached = await store.get_messages(req.user_id, device_id, since,
                                                     req.now["to_device"], TO_DEVICE_LIMIT)
        return messages, reached


class DeviceListsSection(SyncSection):
    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        changed, left = await self._device_lists(req, result.rooms_joined, result.newly_joined,
                                                 result.rooms_left)
        result.body["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
        result.has_updates = result.has_updates or bool(changed or left)

    async def _device_lists(self, req: SyncRequest, joined_ids: list[str],
                            newly_joined: set[str], left_rooms: set[str],
                            ) -> tuple[set[str], set[str]]:
        if req.since is None or (not req.moved("device_lists") and not req.moved("events")
                                 and not newly_joined and not left_rooms):
            return set(), set()
        changed_users = await self.hs.stores.device_lists.users_changed_between(
            req.since["device_lists"], req.now["device_lists"])
        sharing = await users_sharing_rooms(self.hs.stores.memberships, req.user_id,
                                            joined_ids)
        changed = {u for u in changed_users if u in sharing}
        for room_id in newly_joined:
            changed.update(m.user_id for m in await self.hs.stores.memberships.get_members(room_id))
        left: set[str] = set()
        for room_id in left_rooms:
            for member in await self.hs.stores.memberships.get_members(room_id):
                if member.user_id not in sharing:
                    left.add(member.user_id)
        # Others joining or leaving the rooms we stay in.
        lower = req.events_lower
        joined_before = [r for r in joined_ids if r not in newly_joined]
        now_sharing, no_longer = await self.hs.e2e_keys.membership_driven_changes(
            req.user_id, joined_before, sharing, lambda room: lower(room) or 0,
            req.events_upper)
        changed |= now_sharing
        left |= no_longer
        if req.user_id not in changed_users:
            changed.discard(req.user_id)
        return changed, left


class KeyCountsSection(SyncSection):
    """One-time and fallback key counts of the syncing device (never "new")."""

    async def fill(self, req: SyncRequest, result: SyncResult) -> None:
        if req.requester.device_id:
            counts, fallback = await self.hs.stores.e2e_keys.key_counts_for_sync(
                req.user_id, req.requester.device_id)
            result.body["device_one_time_keys_count"] = counts
            result.body["device_unused_fallback_key_types"] = fallback
