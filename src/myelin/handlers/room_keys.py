"""Server-side key backups (``/room_keys``): backup versions and the keys in them.

The server stores what clients encrypted; it only checks shapes and keeps
the spec's rules: keys go only into the current version
(``M_WRONG_ROOM_KEYS_VERSION`` with ``current_version`` otherwise), a stored
key is replaced only by a better one, ``etag`` changes whenever a version's
keys change, and version numbers are never reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from myelin.domain import MatrixError, bad_json, invalid_param, missing_param, not_found
from myelin.storage.stores.room_keys import RoomKey, UnknownVersion, WrongVersion

if TYPE_CHECKING:
    from myelin.app.homeserver import HomeServer

# The spec defines one algorithm; clients experiment with others under
# unstable names, so any non-empty name is stored, as Synapse does.
MEGOLM_BACKUP_V1 = "m.megolm_backup.v1.curve25519-aes-sha2"

_MAX_VERSION = 2**62


def parse_version(version: str | None) -> int | None:
    """A version string of ours (a positive decimal) as a number; None if it is
    not one (so it names no version)."""
    if version is None or not version.isascii() or not version.isdigit():
        return None
    number = int(version)
    return number if 0 < number < _MAX_VERSION else None


def _unknown_version() -> MatrixError:
    return not_found("Unknown backup version")


def _wrong_version(current: int) -> MatrixError:
    return MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.",
                       current_version=str(current))


def _backup_info(body: dict[str, Any]) -> tuple[str, Any]:
    algorithm = body.get("algorithm")
    auth_data = body.get("auth_data")
    if algorithm is None:
        raise missing_param("Missing algorithm")
    if auth_data is None:
        raise missing_param("Missing auth_data")
    if not isinstance(algorithm, str) or not algorithm:
        raise bad_json("algorithm must be a non-empty string")
    # The spec's algorithm uses an object; the data is the algorithm's own, and
    # earlier clients (and sytest) store opaque strings, which Synapse keeps.
    return algorithm, auth_data


def parse_key(value: Any, where: str) -> RoomKey:
    """One ``KeyBackupData`` object; M_BAD_JSON naming ``where`` otherwise."""
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object")
    fields = {}
    for name in ("first_message_index", "forwarded_count"):
        number = value.get(name)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0 \
                or number >= 2**53:
            raise bad_json(f"{where}.{name} must be a non-negative integer")
        fields[name] = number
    verified = value.get("is_verified")
    if not isinstance(verified, bool):
        raise bad_json(f"{where}.is_verified must be a boolean")
    session_data = value.get("session_data")
    if session_data is None:  # opaque, algorithm-dependent: anything but missing
        raise bad_json(f"{where}.session_data is required")
    return RoomKey(first_message_index=fields["first_message_index"],
                   forwarded_count=fields["forwarded_count"], is_verified=verified,
                   session_data=session_data)


def parse_sessions(value: Any, room_id: str, where: str) -> list[tuple[str, str, RoomKey]]:
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object with 'sessions'")
    sessions = value.get("sessions")
    if not isinstance(sessions, dict):
        raise bad_json(f"{where}.sessions must be an object")
    return [(room_id, session_id, parse_key(key, f"{where}.sessions.{session_id}"))
            for session_id, key in sessions.items()]


def parse_rooms(body: dict[str, Any]) -> list[tuple[str, str, RoomKey]]:
    rooms = body.get("rooms")
    if not isinstance(rooms, dict):
        raise bad_json("rooms must be an object")
    keys = []
    for room_id, room in rooms.items():
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id!r} is not a room ID")
        keys.extend(parse_sessions(room, room_id, f"rooms.{room_id}"))
    return keys


class RoomKeysHandler:
    def __init__(self, hs: HomeServer) -> None:
        self.store = hs.stores.room_keys

    # -- versions ----------------------------------------------------------
    async def create_version(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        algorithm, auth_data = _backup_info(body)
        version = await self.store.create_version(user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        """The named version, or the current one when ``version`` is None."""
        number = None if version is None else parse_version(version)
        if version is not None and number is None:
            raise _unknown_version()
        info = await self.store.get_version(user_id, number)
        if info is None:
            raise not_found("No current backup version" if version is None
                            else "Unknown backup version")
        count, etag = await self.store.count_and_etag(user_id, info.version)
        return {"algorithm": info.algorithm, "auth_data": info.auth_data, "count": count,
                "etag": str(etag), "version": str(info.version)}

    async def update_version(self, user_id: str, version: str,
                             body: dict[str, Any]) -> dict[str, Any]:
        algorithm, auth_data = _backup_info(body)
        in_body = body.get("version")
        if in_body is not None and in_body != version:
            raise invalid_param("version in the body does not match the version in the path")
        number = parse_version(version)
        info = None if number is None else await self.store.get_version(user_id, number)
        if info is None or number is None:
            raise _unknown_version()
        if algorithm != info.algorithm:
            raise invalid_param("algorithm does not match the backup's algorithm")
        if not await self.store.update_auth_data(user_id, number, auth_data):
            raise _unknown_version()  # deleted meanwhile
        return {}

    async def delete_version(self, user_id: str, version: str) -> dict[str, Any]:
        number = parse_version(version)
        deleted = None if number is None else await self.store.delete_version(user_id, number)
        if deleted is None:
            raise _unknown_version()
        return {}

    # -- keys --------------------------------------------------------------
    async def upload(self, user_id: str, version: str | None,
                     keys: list[tuple[str, str, RoomKey]]) -> dict[str, Any]:
        if version is None:
            raise missing_param("Missing version")
        number = parse_version(version)
        try:
            if number is None:
                raise WrongVersion(await self.store.current_version(user_id))
            count, etag = await self.store.upload_keys(user_id, number, keys)
        except WrongVersion as e:
            if e.current is None:
                raise _unknown_version() from None
            raise _wrong_version(e.current) from None
        return {"count": count, "etag": str(etag)}

    async def _live_version(self, user_id: str, version: str | None) -> int:
        if version is None:
            raise missing_param("Missing version")
        number = parse_version(version)
        if number is None or await self.store.get_version(user_id, number) is None:
            raise _unknown_version()
        return number

    async def get_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                       session_id: str | None = None) -> dict[str, Any]:
        number = await self._live_version(user_id, version)
        rooms = await self.store.get_keys(user_id, number, room_id, session_id)
        if session_id is not None:
            key = rooms.get(room_id or "", {}).get(session_id)
            if key is None:
                raise not_found("No room_keys found")
            return key.to_json()
        as_json = {room: {"sessions": {s: k.to_json() for s, k in sessions.items()}}
                   for room, sessions in rooms.items()}
        if room_id is not None:
            return as_json.get(room_id, {"sessions": {}})
        return {"rooms": as_json}

    async def delete_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                          session_id: str | None = None) -> dict[str, Any]:
        number = await self._live_version(user_id, version)
        try:
            count, etag = await self.store.delete_keys(user_id, number, room_id, session_id)
        except UnknownVersion:
            raise _unknown_version() from None
        return {"count": count, "etag": str(etag)}
