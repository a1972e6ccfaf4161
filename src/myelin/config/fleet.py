"""Refusing fleet layouts that cannot work, before anything starts.

`HomeserverConfig.from_reader` checks each key on its own; `validate_fleet`
checks how the keys fit together for the process being loaded: a stream
writer other workers cannot reach, a worker without Redis or on SQLite, two
instances at one address, a writer that does not serve replication where
`instance_map` says. Each refusal is one line naming the key and saying what
to change, so `myelin check-config` and `myelin run` print it as is.
"""

from __future__ import annotations

from myelin.config.errors import ConfigError
from myelin.config.schema import (
    MAIN_INSTANCE,
    MULTI_WRITER_STREAMS,
    HomeserverConfig,
    InstanceLocation,
    ListenerConfig,
)

# Spellings of "this machine" that two instance_map entries may mix.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})

# The keys that give one named instance a job, in the order messages list them.
_SINGLE_INSTANCE_KEYS = ("run_background_tasks_on", "update_user_directory_from_worker",
                         "notify_appservices_from_worker",
                         "media_instance_running_background_jobs")
_INSTANCE_LIST_KEYS = ("federation_sender_instances", "pusher_instances")


def validate_fleet(config: HomeserverConfig, missing_source: str | None = None) -> None:
    """Raise ConfigError (one line) if the process ``config`` describes cannot work
    in the fleet its config describes. ``missing_source`` is named for keys that
    no file set (a key that must be added)."""
    check = _FleetCheck(config, missing_source)
    check.single_writer_streams()
    check.database_is_shared()
    check.redis_enabled()
    check.stream_writers_reachable()
    check.outbound_federation_reachable()
    check.instance_addresses_distinct()
    check.listeners_do_not_take_other_instances_ports()
    check.serves_replication_where_instance_map_says()
    check.worker_has_something_to_do()


def named_roles(config: HomeserverConfig, name: str) -> list[str]:
    """The keys of the shared config that give instance ``name`` a job."""
    roles = [f"stream_writers.{stream}" for stream, writers in config.stream_writers.items()
             if name in writers]
    for key in _SINGLE_INSTANCE_KEYS:
        if getattr(config, key) == name:
            roles.append(key)
    for key in _INSTANCE_LIST_KEYS:
        if name in getattr(config, key):
            roles.append(key)
    return roles


def other_instances_named(config: HomeserverConfig) -> list[str]:
    """Instances other than main that the config gives a job: proof of a fleet."""
    names: dict[str, None] = {}
    for writers in config.stream_writers.values():
        names.update(dict.fromkeys(writers))
    for key in _SINGLE_INSTANCE_KEYS:
        value = getattr(config, key)
        if value is not None:
            names[value] = None
    for key in _INSTANCE_LIST_KEYS:
        names.update(dict.fromkeys(getattr(config, key)))
    names.pop(MAIN_INSTANCE, None)
    return list(names)


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or (a in _LOCAL_HOSTS and b in _LOCAL_HOSTS)


def _address(loc: InstanceLocation) -> str:
    return f"unix:{loc.path}" if loc.path else f"{loc.host}:{loc.port}"


def _map_key(name: str) -> str:
    return "instance_map.main" if name == MAIN_INSTANCE else f"instance_map.{name}"


class _FleetCheck:
    def __init__(self, config: HomeserverConfig, missing_source: str | None) -> None:
        self.config = config
        self.missing_source = missing_source
        self.me = config.instance_name
        self.listeners_key = "listeners" if config.is_main_process else "worker_listeners"

    def error(self, key_path: str, message: str) -> ConfigError:
        top = key_path.split(".")[0].split("[")[0]
        return ConfigError(key_path, message, self.config.sources.get(top, self.missing_source))

    @property
    def in_a_fleet(self) -> bool:
        return not self.config.is_main_process or bool(other_instances_named(self.config))

    def _fleet_reason(self) -> str:
        if not self.config.is_main_process:
            return f"worker {self.me}"
        others = ", ".join(other_instances_named(self.config))
        return f"this fleet (the config gives work to {others})"

    # -- the checks, in the order a reader would fix them ------------------------
    def single_writer_streams(self) -> None:
        for stream, writers in self.config.stream_writers.items():
            if len(writers) > 1 and stream not in MULTI_WRITER_STREAMS:
                raise self.error(
                    f"stream_writers.{stream}",
                    f"the {stream} stream takes exactly one writer, got {len(writers)} "
                    f"({', '.join(writers)}); list one instance (only events, receipts and "
                    "to_device may have several)")

    def database_is_shared(self) -> None:
        if self.in_a_fleet and self.config.database.engine == "sqlite":
            raise self.error(
                "database.name",
                f"{self._fleet_reason()} cannot run on SQLite: a fleet needs PostgreSQL, shared "
                "by every process; set database.name: psycopg2 and database.args in the shared "
                "config")

    def redis_enabled(self) -> None:
        if self.in_a_fleet and not self.config.redis.enabled:
            raise self.error(
                "redis.enabled",
                f"{self._fleet_reason()} needs Redis to replicate between processes; set "
                "redis.enabled: true (and redis.host/redis.port) in the shared config")

    def stream_writers_reachable(self) -> None:
        instance_map = self.config.instance_map
        off_main: list[str] = []
        for stream, writers in self.config.stream_writers.items():
            for writer in writers:
                if writer == MAIN_INSTANCE:
                    continue
                off_main.append(writer)
                if writer not in instance_map:
                    raise self.error(
                        f"stream_writers.{stream}",
                        f'writer "{writer}" is not in instance_map; add instance_map.{writer} '
                        "with the host and port of its replication listener")
        if off_main and MAIN_INSTANCE not in instance_map:
            raise self.error(
                "instance_map",
                f"has no entry for the main process, which stream writers "
                f"({', '.join(dict.fromkeys(off_main))}) must reach; add instance_map.main with "
                "the host and port of the main process's replication listener")

    def outbound_federation_reachable(self) -> None:
        """A process outside ``outbound_federation_restricted_to`` hands its
        requests to those inside: it must know where they listen."""
        allowed = self.config.federation.outbound_federation_restricted_to
        if not allowed or self.me in allowed:
            return
        for name in allowed:
            if name not in self.config.instance_map:
                raise self.error(
                    "outbound_federation_restricted_to",
                    f'"{name}" is not in instance_map; add {_map_key(name)} with the host '
                    "and port of its replication listener")

    def instance_addresses_distinct(self) -> None:
        seen: list[tuple[str, InstanceLocation]] = []
        for name, loc in self.config.instance_map.items():
            for other_name, other in seen:
                if loc.path and other.path:
                    clash = loc.path == other.path
                else:
                    clash = (not loc.path and not other.path and loc.port == other.port
                             and _same_host(loc.host, other.host))
                if clash:
                    raise self.error(
                        _map_key(name),
                        f"is at the same address as {_map_key(other_name)} ({_address(loc)}); "
                        "give each instance its own port")
            seen.append((name, loc))

    def listeners_do_not_take_other_instances_ports(self) -> None:
        own = self.config.instance_map.get(self.me)
        for index, listener in enumerate(self.config.listeners):
            for name, loc in self.config.instance_map.items():
                if name == self.me:
                    continue
                if listener.path is not None:
                    clash = loc.path == listener.path
                else:
                    clash = (loc.path is None and loc.port == listener.port
                             and self._may_be_this_machine(loc.host, own, listener))
                if clash:
                    what = "path" if listener.path is not None else "port"
                    raise self.error(
                        f"{self.listeners_key}[{index}].{what}",
                        f"{_address(loc)} is where {_map_key(name)} says {name} listens; give "
                        f"this listener another {what} (or fix {_map_key(name)})")

    @staticmethod
    def _may_be_this_machine(host: str, own: InstanceLocation | None,
                             listener: ListenerConfig) -> bool:
        if own is not None and own.path is None:
            return _same_host(host, own.host)
        return host.lower() in _LOCAL_HOSTS or host in listener.bind_addresses

    def serves_replication_where_instance_map_says(self) -> None:
        own = self.config.instance_map.get(self.me)
        if own is None:
            return
        for listener in self.config.listeners:
            if "replication" not in listener.resources or listener.type != "http":
                continue
            if (own.path is not None and listener.path == own.path) or (
                    own.path is None and listener.port == own.port):
                return
        where = f"path: {own.path}" if own.path else f"port: {own.port}"
        raise self.error(
            _map_key(self.me),
            f"says {self.me} serves replication at {_address(own)}, but {self.listeners_key} "
            f"has no listener there with the replication resource; add one to "
            f"{self.listeners_key} ({where}, resources: [{{names: [replication]}}])")

    def worker_has_something_to_do(self) -> None:
        config = self.config
        if config.is_main_process or config.listeners:
            return
        if named_roles(config, self.me) or config.app_roles:
            return
        raise self.error(
            "worker_listeners",
            f"worker {self.me} has no worker_listeners and no role (it is not named in "
            "stream_writers, run_background_tasks_on, federation_sender_instances, "
            "pusher_instances, update_user_directory_from_worker, "
            "notify_appservices_from_worker or media_instance_running_background_jobs); give "
            "it worker_listeners, or name "
            "it for a job in the shared config (a worker ignores `listeners`: they are the "
            "main process's)")
