"""Config checks that need the room-version table."""

from myelin.config.reader import ConfigReader


def check_room_version(r: ConfigReader, version: str) -> None:
    from myelin.events.room_versions import KNOWN_ROOM_VERSIONS

    if version not in KNOWN_ROOM_VERSIONS:
        raise r.error("default_room_version", f'unknown room version "{version}"')
