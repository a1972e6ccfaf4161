"""Account data, global and per room, and room tags (``m.tag``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError
from myelin.replication.http import ReplicationEndpoint

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# Types the server manages itself; clients may not set them directly.
SERVER_MANAGED = ("m.fully_read", "m.push_rules")


class PutAccountData(ReplicationEndpoint):
    NAME = "account_data"
    STREAM = "account_data"

    @staticmethod
    async def handle(hs: HomeServer, p: dict[str, Any]) -> Any:
        await hs.stores.account_data.put(p["user_id"], p["room_id"], p["type"], p["content"])
        return {}


class AccountDataHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.store = hs.stores.account_data

    async def put(self, user_id: str, room_id: str, data_type: str,
                  content: dict[str, Any]) -> None:
        await self.hs.replication.call(PutAccountData, {
            "user_id": user_id, "room_id": room_id, "type": data_type, "content": content})

    async def put_from_client(self, user_id: str, room_id: str, data_type: str,
                              content: dict[str, Any]) -> None:
        if data_type in SERVER_MANAGED:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        await self.put(user_id, room_id, data_type, content)

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        return await self.store.get(user_id, room_id, data_type)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores, from their ``m.ignored_user_list``."""
        content = await self.store.get(user_id, "", "m.ignored_user_list") or {}
        ignored = content.get("ignored_users")
        if not isinstance(ignored, dict):
            return frozenset()
        return frozenset(u for u in ignored if isinstance(u, str) and u != user_id)

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.store.get(user_id, room_id, "m.tag") or {}
        tags = content.get("tags")
        return tags if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str,
                      content: dict[str, Any]) -> None:
        tags = await self.get_tags(user_id, room_id)
        tags[tag] = content
        await self.put(user_id, room_id, "m.tag", {"tags": tags})

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        tags = await self.get_tags(user_id, room_id)
        tags.pop(tag, None)
        await self.put(user_id, room_id, "m.tag", {"tags": tags})
