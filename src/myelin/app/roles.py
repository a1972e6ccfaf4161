"""What one process of a fleet is: its streams, its sharded writers and its jobs.

Every process computes the same answers from the same shared config, so
"who writes the events of room R" or "which instance runs the background
tasks" never needs asking over the network. A single process (the monolith)
is a fleet of one: it is the writer of every stream and runs every job.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from myelin.config import HomeserverConfig

MAIN = "master"

# Streams that a fleet may split over several writers, with the key each
# write is sharded by. All other streams have exactly one writer.
SHARDED_STREAMS = {"events": "room", "receipts": "room", "to_device": "user"}

# Streams with a writer seam, in one list: the stream spine, the token, the
# writers and the routing all derive from it.
WRITER_STREAMS = ("events", "typing", "receipts", "presence", "to_device", "account_data",
                  "device_lists", "push_rules")

# Jobs that run on exactly one (or a named set of) process(es).
JOBS = ("background_tasks", "federation_sender", "pusher", "user_dir", "appservice", "media")


def shard_index(key: str, count: int) -> int:
    """A stable hash of ``key`` onto ``count`` writers, the same in every
    process and every Python run (``hash()`` is salted per process).

    It is the hash nginx's ``hash $key;`` (not ``consistent``) uses to pick
    the first peer of an upstream of equal weights — CRC-32 of the key, its
    upper 15 bits, modulo the peer count — so a proxy whose upstream lists the
    events writers in ``stream_writers`` order sends a room's requests
    straight to the process that persists its events.
    """
    if count <= 1:
        return 0
    return ((zlib.crc32(key.encode("utf-8")) >> 16) & 0x7FFF) % count


@dataclass(frozen=True)
class ProcessRoles:
    """The roles of the process ``instance_name`` in the fleet ``config`` describes."""

    instance_name: str
    writers: dict[str, tuple[str, ...]]
    jobs: frozenset[str]
    is_main: bool
    # Which of this process's listeners serve the media repository: "client"
    # (main: its client and federation listeners too, as Synapse's main does),
    # "listed" (a worker: listeners naming the media resource) or "none"
    # (main with `enable_media_repo: false`: media lives on media workers).
    media_serving: str = "listed"

    @classmethod
    def from_config(cls, config: HomeserverConfig) -> ProcessRoles:
        me = config.instance_name
        writers = {stream: tuple(config.writers_of(stream)) for stream in WRITER_STREAMS}
        jobs: set[str] = set()
        if getattr(config, "run_background_tasks_on", MAIN) == me:
            jobs.add("background_tasks")
        senders = list(getattr(config, "federation_sender_instances", []) or [])
        # `send_federation: false` (in the shared config, as Synapse's docs have
        # it) stops main sending; the listed instances send all the same.
        main_sends = getattr(config, "send_federation", True)
        if (me in senders and (me != MAIN or main_sends)) or \
                (not senders and me == MAIN and main_sends):
            jobs.add("federation_sender")
        pushers = list(getattr(config, "pusher_instances", []) or [])
        if getattr(config, "start_pushers", True) and (me in pushers or
                                                        (not pushers and me == MAIN)):
            jobs.add("pusher")
        for job, key in (("user_dir", "update_user_directory_from_worker"),
                         ("appservice", "notify_appservices_from_worker"),
                         ("media", "media_instance_running_background_jobs")):
            owner = getattr(config, key, None) or MAIN
            if owner == me:
                jobs.add(job)
        if getattr(config, "notify_appservices_from_worker", None) is None and \
                getattr(config, "notify_appservices", True) is False:
            jobs.discard("appservice")  # the legacy way to leave it to an appservice worker
        jobs |= set(getattr(config, "app_roles", frozenset()))
        media = getattr(config, "media", None)
        media_serving = "listed"
        if config.is_main_process:
            media_serving = "client" if media is None or media.enable_media_repo else "none"
            if media is not None and not media.enable_media_repo:
                # Synapse: `enable_media_repo: false` also stops main's media jobs.
                jobs.discard("media")
        return cls(me, writers, frozenset(jobs), config.is_main_process, media_serving)

    def writers_of(self, stream: str) -> tuple[str, ...]:
        return self.writers.get(stream, (MAIN,))

    def writer_for(self, stream: str, key: str | None = None) -> str:
        """The instance that writes ``stream`` for ``key`` (a room or user id)."""
        writers = self.writers_of(stream)
        if len(writers) == 1 or key is None:
            return writers[0]
        return writers[shard_index(key, len(writers))]

    def writer_index(self, stream: str, key: str) -> int:
        """The index in ``stream_writers`` of the writer of ``key`` (a token's ``i``)."""
        count = len(self.writers_of(stream))
        return shard_index(key, count) if count > 1 else 0

    def is_writer(self, stream: str, key: str | None = None) -> bool:
        if key is None:
            return self.instance_name in self.writers_of(stream)
        return self.writer_for(stream, key) == self.instance_name

    @property
    def written_streams(self) -> list[str]:
        return [s for s in WRITER_STREAMS if self.instance_name in self.writers_of(s)]

    def runs(self, job: str) -> bool:
        return job in self.jobs

    def describe(self) -> list[str]:
        """Human-readable roles, for logs and ``myelin fleet status``."""
        out = ["main"] if self.is_main else []
        out += [f"writer:{s}" for s in self.written_streams]
        out += sorted(self.jobs)
        return out or ["generic"]
