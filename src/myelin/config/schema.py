"""The typed shape of a homeserver's configuration.

Keys follow Synapse's homeserver.yaml where one exists, so an admin's file
reads naturally; `HomeserverConfig.from_reader` is the single place that maps
YAML keys onto these dataclasses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from myelin.config.discovery import DiscoveryConfig, VoipConfig, read_discovery, read_voip
from myelin.config.errors import ConfigError
from myelin.config.federation import FederationConfig, read_federation
from myelin.config.federation_sender import FederationSenderConfig, read_federation_sender
from myelin.config.media import MediaConfig, media_config
from myelin.config.push import EmailConfig, PushConfig, read_email, read_push
from myelin.config.reader import ConfigReader

if TYPE_CHECKING:
    from myelin.appservice.registration import AppService

logger = logging.getLogger(__name__)

LISTENER_RESOURCES = ("client", "federation", "keys", "media", "replication", "metrics", "health",
                      "openid", "static", "consent")

MAIN_PROCESS_APP = "synapse.app.homeserver"

# The main process's instance name. It is stored in the database (the writer
# column of stream tables), so it stays "master"; config files may call the
# main process either "main" (Synapse's current spelling) or "master".
MAIN_INSTANCE = "master"
_MAIN_ALIASES = ("main", "master")


@dataclass(frozen=True)
class WorkerApp:
    """What a `worker_app` name means: the roles it implies by itself."""

    roles: frozenset[str]
    meaning: str


# Every name accepted in `worker_app`. Apart from the main process they all run
# the generic worker; the historical single-purpose apps also imply the job
# they were named for, even when the shared config does not name the worker
# for it (Synapse behaves the same way).
WORKER_APP_MEANINGS: dict[str, WorkerApp] = {
    MAIN_PROCESS_APP: WorkerApp(frozenset(), "the main process"),
    "synapse.app.generic_worker": WorkerApp(frozenset(), "a generic worker"),
    "synapse.app.pusher": WorkerApp(
        frozenset({"pusher"}), "a generic worker that sends push notifications"),
    "synapse.app.appservice": WorkerApp(
        frozenset({"appservice"}), "a generic worker that notifies application services"),
    "synapse.app.federation_sender": WorkerApp(
        frozenset({"federation_sender"}), "a generic worker that sends outbound federation"),
    "synapse.app.media_repository": WorkerApp(
        frozenset({"media"}), "a generic worker that runs the media repository's jobs"),
    "synapse.app.user_dir": WorkerApp(
        frozenset({"user_dir"}), "a generic worker that updates the user directory"),
    "synapse.app.client_reader": WorkerApp(frozenset(), "a generic worker (historical name)"),
    "synapse.app.event_creator": WorkerApp(frozenset(), "a generic worker (historical name)"),
    "synapse.app.federation_reader": WorkerApp(frozenset(), "a generic worker (historical name)"),
    "synapse.app.frontend_proxy": WorkerApp(frozenset(), "a generic worker (historical name)"),
    "synapse.app.synchrotron": WorkerApp(frozenset(), "a generic worker (historical name)"),
}

# Worker application names accepted in `worker_app`.
WORKER_APPS = tuple(WORKER_APP_MEANINGS)

STREAM_WRITER_KINDS = ("events", "typing", "to_device", "account_data", "receipts", "presence",
                       "push_rules", "device_lists")

# Streams whose writes are sharded over several writers; every other stream
# takes exactly one writer.
MULTI_WRITER_STREAMS = frozenset({"events", "receipts", "to_device"})


def normalise_instance(name: str) -> str:
    """The canonical instance name: "main" and "master" both mean the main process."""
    return MAIN_INSTANCE if name in _MAIN_ALIASES else name

_SERVER_NAME = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class ListenerConfig:
    port: int | None
    bind_addresses: list[str]
    type: str = "http"
    x_forwarded: bool = False
    tls: bool = False
    resources: frozenset[str] = frozenset({"client", "federation"})
    path: str | None = None  # a unix socket instead of a port


@dataclass(frozen=True)
class DatabaseConfig:
    engine: str  # "sqlite" | "postgres"
    # sqlite
    path: str = ":memory:"
    # postgres
    user: str | None = None
    password: str | None = None
    database: str | None = None
    host: str | None = None
    port: int = 5432
    cp_min: int = 5
    cp_max: int = 10


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst_count: float


@dataclass(frozen=True)
class InstanceLocation:
    host: str
    port: int | None
    tls: bool = False
    path: str | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class RedisConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = 6379
    password: str | None = None
    dbid: int = 0
    path: str | None = None


@dataclass(frozen=True)
class LoginRateLimits:
    address: RateLimit = RateLimit(0.003, 5)
    account: RateLimit = RateLimit(0.003, 5)
    failed_attempts: RateLimit = RateLimit(0.17, 3)


@dataclass(frozen=True)
class UserDirectoryConfig:
    """`user_directory`: who may be found by `/user_directory/search`."""

    enabled: bool = True
    # Every local user, not only those sharing a room or in public rooms.
    search_all_users: bool = False
    # Rank users of this server above others.
    prefer_local_users: bool = False
    # List locked accounts too.
    show_locked_users: bool = False


@dataclass(frozen=True)
class ServerNoticesConfig:
    """``server_notices``: who sends the admin's notices and how their room looks."""

    system_mxid_localpart: str
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    room_name: str = "Server Notices"
    room_avatar_url: str | None = None
    room_topic: str | None = None
    auto_join: bool = False


def _server_notices(r: ConfigReader) -> ServerNoticesConfig | None:
    if r.raw("server_notices") is None:
        return None
    s = r.section("server_notices")
    localpart = s.str_("system_mxid_localpart", None)
    if localpart is None:
        return None
    return ServerNoticesConfig(
        system_mxid_localpart=localpart,
        system_mxid_display_name=s.str_("system_mxid_display_name", None),
        system_mxid_avatar_url=s.str_("system_mxid_avatar_url", None),
        room_name=s.str_("room_name", "Server Notices"),
        room_avatar_url=s.str_("room_avatar_url", None),
        room_topic=s.str_("room_topic", None),
        auto_join=s.bool_("auto_join", False))


@dataclass
class HomeserverConfig:
    server_name: str
    public_baseurl: str
    listeners: list[ListenerConfig]
    database: DatabaseConfig
    signing_key_path: str | None
    enable_registration: bool = False
    enable_registration_without_verification: bool = False
    registration_shared_secret: str | None = None
    registration_requires_token: bool = False
    rc_message: RateLimit = RateLimit(0.2, 10)
    rc_registration: RateLimit = RateLimit(0.17, 3)
    rc_login: LoginRateLimits = field(default_factory=LoginRateLimits)
    rc_joins_local: RateLimit = RateLimit(0.1, 10)
    rc_invites_per_room: RateLimit = RateLimit(0.3, 10)
    rc_admin_redaction: RateLimit | None = None
    server_notices: ServerNoticesConfig | None = None
    log_config: str | None = None
    max_upload_size: int = 50 * 1024 * 1024
    max_request_body_size: int = 1024 * 1024
    media_store_path: str = "media_store"
    media: MediaConfig = field(default_factory=MediaConfig)
    default_room_version: str = "12"
    allow_guest_access: bool = False
    # What other servers may ask (api/federation/queries.py). Synapse's keys;
    # the public room list is served by default (Synapse's default is off),
    # device names are not (as Synapse).
    allow_public_rooms_over_federation: bool = True
    allow_device_name_lookup_over_federation: bool = False
    password_min_length: int = 0
    # application services (appservice/registration.py), from app_service_config_files
    app_services: list[AppService] = field(default_factory=list)
    use_appservice_legacy_authorization: bool = False
    session_lifetime_ms: int | None = None
    # .well-known documents and TURN (config/discovery.py)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    voip: VoipConfig = field(default_factory=VoipConfig)
    # reaching other servers, trusting their keys (config/federation.py)
    federation: FederationConfig = field(default_factory=FederationConfig)
    # Synapse's names: a token asked for with `refresh_token: true` lives this
    # long (5 minutes by default); other tokens do not expire unless set.
    refreshable_access_token_lifetime_ms: int | None = 5 * 60 * 1000
    nonrefreshable_access_token_lifetime_ms: int | None = None
    user_directory: UserDirectoryConfig = field(default_factory=UserDirectoryConfig)
    # push delivery and email (config/push.py)
    push: PushConfig = field(default_factory=PushConfig)
    email: EmailConfig | None = None
    # outbound federation's retry schedule (config/federation_sender.py)
    federation_sender: FederationSenderConfig = field(default_factory=FederationSenderConfig)
    # workers
    worker_app: str = MAIN_PROCESS_APP
    worker_name: str = MAIN_INSTANCE
    # instance name (normalised: the main process is "master") -> where its
    # replication listener is
    instance_map: dict[str, InstanceLocation] = field(default_factory=dict)
    # stream -> writer instance names (normalised)
    stream_writers: dict[str, list[str]] = field(default_factory=dict)
    redis: RedisConfig = field(default_factory=RedisConfig)
    worker_replication_secret: str | None = None
    run_background_tasks_on: str = MAIN_INSTANCE
    federation_sender_instances: list[str] = field(default_factory=list)
    send_federation: bool = True
    pusher_instances: list[str] = field(default_factory=list)
    start_pushers: bool = True
    update_user_directory_from_worker: str | None = None
    notify_appservices_from_worker: str | None = None
    # Synapse's legacy spelling: `notify_appservices: false` on main, with a
    # `synapse.app.appservice` worker doing it instead.
    notify_appservices: bool = True
    media_instance_running_background_jobs: str | None = None
    worker_log_config: str | None = None
    worker_pid_file: str | None = None
    # where each top-level key came from, for messages
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def is_main_process(self) -> bool:
        return self.worker_app == MAIN_PROCESS_APP

    @property
    def instance_name(self) -> str:
        return MAIN_INSTANCE if self.is_main_process else self.worker_name

    @property
    def app_roles(self) -> frozenset[str]:
        """The roles `worker_app` implies by itself (the historical single-purpose apps)."""
        meaning = WORKER_APP_MEANINGS.get(self.worker_app)
        return meaning.roles if meaning is not None else frozenset()

    def writers_of(self, stream: str) -> list[str]:
        """The (normalised) instances writing ``stream``; the main process by default."""
        return [normalise_instance(w) for w in self.stream_writers.get(stream) or []] or [
            MAIN_INSTANCE]

    @classmethod
    def from_reader(cls, r: ConfigReader) -> HomeserverConfig:
        server_name = r.str_("server_name")
        if not _SERVER_NAME.match(server_name):
            raise r.error("server_name", f'"{server_name}" is not a valid server name')
        # The shared file's `listeners` are the main process's. A worker never
        # binds them (only its `worker_listeners`), but they still say where
        # the server's public port is.
        main_listeners = [_listener(lr) for lr in r.sections("listeners")]
        worker_listeners = [_listener(lr) for lr in r.sections("worker_listeners")]
        public_baseurl = r.str_("public_baseurl", None)
        if public_baseurl is None:
            port = next((lst.port for lst in main_listeners if "client" in lst.resources), 8008)
            public_baseurl = f"http://{server_name.split(':')[0]}:{port}/"
        if not public_baseurl.endswith("/"):
            public_baseurl += "/"
        database = _database(r.section("database"))
        default_room_version = r.raw("default_room_version", "12")
        if isinstance(default_room_version, int) and not isinstance(default_room_version, bool):
            default_room_version = str(default_room_version)
        if not isinstance(default_room_version, str):
            raise r.error("default_room_version", "expected a room version such as \"12\"")
        from myelin.config.rooms import check_room_version

        check_room_version(r, default_room_version)
        login = r.section("rc_login")
        joins = r.section("rc_joins")
        invites = r.section("rc_invites")
        password_config = r.section("password_config")
        policy = password_config.section("policy")
        session_lifetime = r.raw("session_lifetime")
        directory = r.section("user_directory")
        workers = _workers(r)
        is_main = workers["worker_app"] == MAIN_PROCESS_APP
        cfg = cls(
            server_name=server_name,
            public_baseurl=public_baseurl,
            listeners=main_listeners if is_main else worker_listeners,
            database=database,
            signing_key_path=r.str_("signing_key_path", None),
            enable_registration=r.bool_("enable_registration", False),
            enable_registration_without_verification=r.bool_(
                "enable_registration_without_verification", False
            ),
            registration_shared_secret=r.str_("registration_shared_secret", None),
            registration_requires_token=r.bool_("registration_requires_token", False),
            rc_message=_rate(r, "rc_message", RateLimit(0.2, 10)),
            rc_registration=_rate(r, "rc_registration", RateLimit(0.17, 3)),
            rc_login=LoginRateLimits(
                address=_rate(login, "address", RateLimit(0.003, 5)),
                account=_rate(login, "account", RateLimit(0.003, 5)),
                failed_attempts=_rate(login, "failed_attempts", RateLimit(0.17, 3)),
            ),
            rc_joins_local=_rate(joins, "local", RateLimit(0.1, 10)),
            rc_invites_per_room=_rate(invites, "per_room", RateLimit(0.3, 10)),
            rc_admin_redaction=_rate(r, "rc_admin_redaction", None),
            server_notices=_server_notices(r),
            log_config=r.str_("log_config", None),
            max_upload_size=r.size("max_upload_size", 50 * 1024 * 1024),
            max_request_body_size=r.size("max_request_body_size", 1024 * 1024),
            media_store_path=r.str_("media_store_path", "media_store"),
            media=media_config(r),
            default_room_version=default_room_version,
            allow_guest_access=r.bool_("allow_guest_access", False),
            allow_public_rooms_over_federation=r.bool_("allow_public_rooms_over_federation",
                                                       True),
            allow_device_name_lookup_over_federation=r.bool_(
                "allow_device_name_lookup_over_federation", False),
            password_min_length=policy.int_("minimum_length", 0, minimum=0)
            if policy.bool_("enabled", False) else 0,
            session_lifetime_ms=_duration_ms(r, "session_lifetime", session_lifetime),
            discovery=read_discovery(r),
            voip=read_voip(r, _duration_ms),
            federation=read_federation(r),
            federation_sender=read_federation_sender(r, _duration_ms),
            refreshable_access_token_lifetime_ms=_duration_ms(
                r, "refreshable_access_token_lifetime",
                r.raw("refreshable_access_token_lifetime", "5m")),
            nonrefreshable_access_token_lifetime_ms=_duration_ms(
                r, "nonrefreshable_access_token_lifetime",
                r.raw("nonrefreshable_access_token_lifetime")),
            user_directory=UserDirectoryConfig(
                enabled=directory.bool_("enabled", True),
                search_all_users=directory.bool_("search_all_users", False),
                prefer_local_users=directory.bool_("prefer_local_users", False),
                show_locked_users=directory.bool_("show_locked_users", False),
            ),
            push=read_push(r),
            email=read_email(r, _duration_ms),
            **workers,
        )
        _check_tls_listeners(r, cfg)
        from myelin.appservice.registration import load_registrations

        cfg.app_services = load_registrations(
            r.str_list("app_service_config_files", []), server_name,
            r.source("app_service_config_files"))
        cfg.use_appservice_legacy_authorization = r.bool_(
            "use_appservice_legacy_authorization", False)
        return cfg


def _instance_name(r: ConfigReader, key: str, default: Any = None) -> Any:
    value = r.str_(key, default)
    return normalise_instance(value) if isinstance(value, str) else value


def _instance_names(r: ConfigReader, key: str) -> list[str]:
    names = [normalise_instance(name) for name in r.str_list(key, [])]
    _no_duplicates(r, key, names)
    return names


def _no_duplicates(r: ConfigReader, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            also = ' ("main" and "master" are the same instance)' if name == MAIN_INSTANCE else ""
            raise r.error(key, f'lists "{name}" twice{also}; list each instance once')
        seen.add(name)


def _workers(r: ConfigReader) -> dict[str, Any]:
    """The fleet keys, as keyword arguments of HomeserverConfig."""
    worker_app = r.choice("worker_app", WORKER_APPS, MAIN_PROCESS_APP)
    is_main = worker_app == MAIN_PROCESS_APP
    worker_name = r.str_("worker_name", MAIN_INSTANCE)
    if not is_main:
        if not r.has("worker_name"):
            raise r.error("worker_name", "is required when worker_app is a worker")
        if worker_name in _MAIN_ALIASES:
            raise r.error("worker_name", f'"{worker_name}" is the main process\'s name; give '
                                         "this worker a name of its own")

    stream_writers: dict[str, list[str]] = {}
    sw = r.section("stream_writers")
    for kind in sw.keys():
        if kind not in STREAM_WRITER_KINDS:
            raise sw.error(kind, "unknown stream; expected one of "
                                 f"{', '.join(STREAM_WRITER_KINDS)}")
        writers = _instance_names(sw, kind)
        if len(writers) > 1 and kind not in MULTI_WRITER_STREAMS:
            raise sw.error(kind, f"the {kind} stream takes exactly one writer, got "
                                 f"{len(writers)} ({', '.join(writers)}); list one instance "
                                 "(only events, receipts and to_device may have several)")
        stream_writers[kind] = writers

    instance_map: dict[str, InstanceLocation] = {}
    spelled: dict[str, str] = {}
    for name, loc in r.mapping_of_sections("instance_map").items():
        canonical = normalise_instance(name)
        if canonical in instance_map:
            raise r.error("instance_map", f'both "{spelled[canonical]}" and "{name}" name the '
                                          "main process; keep only instance_map.main")
        port = loc.int_("port", None, minimum=1)
        path = loc.str_("path", None)
        if port is None and path is None:
            raise loc.error("port", "is required (or give a unix socket `path`)")
        if port is not None and port > 65535:
            raise loc.error("port", f"must be at most 65535, got {port}")
        instance_map[canonical] = InstanceLocation(
            host=loc.str_("host", "localhost"), port=port, tls=loc.bool_("tls", False),
            path=path,
        )
        spelled[canonical] = name
    _deprecated_main_location(r, instance_map)

    redis_r = r.section("redis")
    redis = RedisConfig(
        enabled=redis_r.bool_("enabled", False),
        host=redis_r.str_("host", "localhost"),
        port=redis_r.int_("port", 6379, minimum=1),
        password=redis_r.str_("password", None),
        dbid=redis_r.int_("dbid", 0, minimum=0),
        path=redis_r.str_("path", None),
    )
    return {
        "worker_app": worker_app,
        "worker_name": worker_name,
        "instance_map": instance_map,
        "stream_writers": stream_writers,
        "redis": redis,
        "worker_replication_secret": _replication_secret(r),
        "run_background_tasks_on": _instance_name(r, "run_background_tasks_on", MAIN_INSTANCE),
        "federation_sender_instances": _instance_names(r, "federation_sender_instances"),
        "send_federation": r.bool_("send_federation", True),
        "pusher_instances": _instance_names(r, "pusher_instances"),
        "start_pushers": r.bool_("start_pushers", True),
        "update_user_directory_from_worker": _instance_name(
            r, "update_user_directory_from_worker"),
        "notify_appservices_from_worker": _instance_name(r, "notify_appservices_from_worker"),
        "notify_appservices": r.bool_("notify_appservices", True),
        "media_instance_running_background_jobs": _instance_name(
            r, "media_instance_running_background_jobs"),
        "worker_log_config": r.str_("worker_log_config", None),
        "worker_pid_file": r.str_("worker_pid_file", None),
    }


def _deprecated_main_location(r: ConfigReader, instance_map: dict[str, InstanceLocation]) -> None:
    """`worker_replication_host`/`_http_port`: the old way to say where main is."""
    host = r.str_("worker_replication_host", None)
    port = r.int_("worker_replication_http_port", None, minimum=1)
    tls = r.bool_("worker_replication_http_tls", False)
    if host is None and port is None:
        return
    if MAIN_INSTANCE in instance_map:
        logger.warning("ignoring worker_replication_host/worker_replication_http_port: "
                       "instance_map.main says where the main process is")
        return
    if host is None:
        raise r.error("worker_replication_host", "is required with worker_replication_http_port; "
                                                 "better, replace both with instance_map.main")
    if port is None:
        raise r.error("worker_replication_http_port", "is required with "
                      "worker_replication_host; better, replace both with instance_map.main")
    if port > 65535:
        raise r.error("worker_replication_http_port", f"must be at most 65535, got {port}")
    instance_map[MAIN_INSTANCE] = InstanceLocation(host=host, port=port, tls=tls)
    where = r.source("worker_replication_host")
    logger.warning(
        "worker_replication_host and worker_replication_http_port are deprecated%s; use "
        "instance_map.main instead (instance_map: {main: {host: %s, port: %d}})",
        f" ({where})" if where else "", host, port)


def _replication_secret(r: ConfigReader) -> str | None:
    secret: str | None = r.str_("worker_replication_secret", None)
    path: str | None = r.str_("worker_replication_secret_path", None)
    if path is None:
        return secret
    if secret is not None:
        raise r.error("worker_replication_secret_path", "cannot be combined with "
                      "worker_replication_secret; remove one of them")
    try:
        with open(path, encoding="utf-8") as f:
            from_file = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise r.error("worker_replication_secret_path", f"cannot read {path}: {reason}") from None
    if not from_file:
        raise r.error("worker_replication_secret_path", f"{path} is empty; put the secret in it")
    return from_file


def _check_tls_listeners(r: ConfigReader, cfg: HomeserverConfig) -> None:
    """A ``tls: true`` listener needs the certificate and key it serves."""
    if not any(listener.tls for listener in cfg.listeners):
        return
    for key in ("tls_certificate_path", "tls_private_key_path"):
        if getattr(cfg.federation, key) is None:
            # Blamed on the file with the listener: that is where tls: true is.
            raise ConfigError(key, "is required when a listener has tls: true",
                              r.source(key) or r.source("listeners"))


def _listener(r: ConfigReader) -> ListenerConfig:
    kind = r.choice("type", ("http", "metrics", "manhole"), "http")
    port = r.int_("port", None, minimum=0)
    path = r.str_("path", None)
    if port is None and path is None:
        raise r.error("port", "is required (or give a unix socket `path`)")
    if port is not None and port > 65535:
        raise r.error("port", f"must be at most 65535, got {port}")
    if r.has("bind_addresses"):
        binds = r.str_list("bind_addresses")
    elif r.has("bind_address"):
        binds = [r.str_("bind_address")]
    else:
        binds = ["::", "0.0.0.0"]
    names: set[str] = set()
    for index, res in enumerate(r.sections("resources")):
        for name in res.str_list("names", []):
            if name not in LISTENER_RESOURCES:
                raise res.error("names", f'unknown resource "{name}"; expected one of '
                                         f"{', '.join(LISTENER_RESOURCES)}")
            names.add(name)
        del index
    if kind == "metrics":
        names.add("metrics")
    return ListenerConfig(
        port=port,
        bind_addresses=binds,
        type=kind,
        x_forwarded=r.bool_("x_forwarded", False),
        tls=r.bool_("tls", False),
        resources=frozenset(names or {"client", "federation"}),
        path=path,
    )


def _database(r: ConfigReader) -> DatabaseConfig:
    name = r.choice("name", ("sqlite3", "sqlite", "psycopg2", "psycopg", "postgres", "postgresql"),
                    "sqlite3")
    args = r.section("args")
    if name.startswith("sqlite"):
        return DatabaseConfig(engine="sqlite", path=args.str_("database", "homeserver.db"))
    return DatabaseConfig(
        engine="postgres",
        user=args.str_("user", None),
        password=args.str_("password", None),
        database=args.str_("database", args.str_("dbname", None)),
        host=args.str_("host", None),
        port=args.int_("port", 5432, minimum=1),
        cp_min=args.int_("cp_min", 5, minimum=1),
        cp_max=args.int_("cp_max", 10, minimum=1),
    )


def _rate(r: ConfigReader, key: str, default: Any) -> Any:
    if not r.has(key):
        r.used.add(key)
        return default
    sub = r.section(key)
    base = default or RateLimit(1.0, 10)
    return RateLimit(
        per_second=sub.float_("per_second", base.per_second),
        burst_count=sub.float_("burst_count", base.burst_count),
    )


_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d|w|y)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000, "y": 31_536_000_000}


def _duration_ms(r: ConfigReader, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            return int(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]
    raise r.error(key, f"expected a duration such as 30d or 3600000, got {value!r}")
