"""The HomeServer: the object graph of one process, built from its config.

Everything a servlet or handler needs hangs off this object, so there is one
place that decides what this process is (main or worker), which stores and
handlers exist, and which listeners serve which resources.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aiohttp import web
from signedjson.key import read_signing_keys

from myelin.app.roles import ProcessRoles
from myelin.config import HomeserverConfig
from myelin.replication.bus import Bus, InMemoryBus
from myelin.replication.follower import ReplicationFollower
from myelin.replication.notifier import Notifier
from myelin.replication.positions import PositionAnnouncer
from myelin.replication.streams import Streams
from myelin.storage.caches import CacheInvalidationStore, CacheRegistry, decode_keys
from myelin.storage.engines import Database

if TYPE_CHECKING:
    from myelin.app.fleet_status import FleetStatus
    from myelin.appservice.sender import AppServiceSender
    from myelin.federation.client import FederationClient
    from myelin.federation.device_lists import RemoteDeviceLists
    from myelin.federation.edus import EduHandler
    from myelin.federation.event_handler import FederationEventHandler
    from myelin.federation.keyring import Keyring
    from myelin.federation.membership import FederationMembership
    from myelin.federation.queries import FederationQueries
    from myelin.federation.sender import FederationSender
    from myelin.federation.third_party_invites import ThirdPartyInviteExchange
    from myelin.handlers.account import AccountLifecycleHandler
    from myelin.handlers.account_admin import AccountAdminHandler
    from myelin.handlers.account_data import AccountDataHandler
    from myelin.handlers.admin.notices import ServerNoticesHandler
    from myelin.handlers.admin.rooms import AdminRoomsHandler
    from myelin.handlers.admin.users import AdminUsersHandler
    from myelin.handlers.appservices import AppServiceHandler
    from myelin.handlers.auth import AuthHandler
    from myelin.handlers.background import BackgroundTasks
    from myelin.handlers.devices import DeviceHandler
    from myelin.handlers.directory import DirectoryHandler
    from myelin.handlers.e2e_keys import E2EKeysHandler
    from myelin.handlers.events import EventCreationHandler, EventPersister
    from myelin.handlers.filters import FilterHandler
    from myelin.handlers.identity import IdentityHandler
    from myelin.handlers.initial_sync import InitialSyncHandler
    from myelin.handlers.media import MediaRepository
    from myelin.handlers.membership import MembershipHandler
    from myelin.handlers.presence import PresenceHandler
    from myelin.handlers.profile import ProfileHandler
    from myelin.handlers.push_actions import PushActionsHandler
    from myelin.handlers.push_rules import PushRulesHandler
    from myelin.handlers.pushers import PusherHandler
    from myelin.handlers.receipts import ReceiptHandler
    from myelin.handlers.redactions import RedactionHandler
    from myelin.handlers.registration import RegistrationHandler
    from myelin.handlers.relations import RelationsHandler
    from myelin.handlers.reports import ReportHandler
    from myelin.handlers.room_keys import RoomKeysHandler
    from myelin.handlers.room_reads import RoomReadHandler
    from myelin.handlers.room_upgrades import RoomUpgradeHandler
    from myelin.handlers.rooms import RoomCreationHandler
    from myelin.handlers.search import SearchHandler
    from myelin.handlers.serialize import EventSerializer
    from myelin.handlers.spaces import SpaceHandler
    from myelin.handlers.sync import SyncHandler
    from myelin.handlers.threepids import ThreepidHandler
    from myelin.handlers.to_device import ToDeviceHandler
    from myelin.handlers.typing import TypingHandler
    from myelin.handlers.uia import UserInteractiveAuth
    from myelin.handlers.user_directory import UserDirectoryHandler
    from myelin.handlers.visibility import VisibilityHandler
    from myelin.handlers.voip import TurnHandler
    from myelin.http.metrics import HttpMetrics
    from myelin.http.ratelimiters import Ratelimiters
    from myelin.http.server import Listener
    from myelin.push.mailer import EmailValidation, Mailer
    from myelin.push.pool import PusherPool
    from myelin.replication.http import ReplicationClient, ReplicationServer

logger = logging.getLogger(__name__)


class Stores:
    """The stores of this process, all over one database."""

    def __init__(self, db: Database, streams: Streams, instance_name: str,
                 caches: CacheRegistry, invalidate: Any) -> None:
        from myelin.storage.stores.account_data import AccountDataStore
        from myelin.storage.stores.accounts import AccountStore
        from myelin.storage.stores.admin import AdminStore
        from myelin.storage.stores.appservices import AppServiceStore
        from myelin.storage.stores.device_lists import DeviceListStore
        from myelin.storage.stores.e2e_keys import E2EKeyStore
        from myelin.storage.stores.events import (
            EventStore,
            MembershipStore,
            RoomStore,
            StateStore,
        )
        from myelin.storage.stores.federation import FederationStore
        from myelin.storage.stores.federation_sender import FederationSenderStore
        from myelin.storage.stores.media import MediaStore
        from myelin.storage.stores.openid import OpenIdTokenStore
        from myelin.storage.stores.presence import PresenceStore
        from myelin.storage.stores.push import PushActionStore, PusherStore
        from myelin.storage.stores.push_rules import PushRuleStore
        from myelin.storage.stores.receipts import ReceiptStore
        from myelin.storage.stores.registration_tokens import RegistrationTokenStore
        from myelin.storage.stores.relations import RelationStore
        from myelin.storage.stores.remote_devices import RemoteDeviceStore
        from myelin.storage.stores.remote_memberships import RemoteMembershipStore
        from myelin.storage.stores.reports import ReportStore
        from myelin.storage.stores.room_keys import RoomKeyStore
        from myelin.storage.stores.search import SearchStore
        from myelin.storage.stores.server_keys import ServerKeyStore
        from myelin.storage.stores.threepid_validation import ThreepidValidationStore
        from myelin.storage.stores.threepids import ThreepidStore
        from myelin.storage.stores.to_device import ToDeviceStore

        gens = streams.generators
        self.accounts = AccountStore(db)
        self.threepids = ThreepidStore(db)
        self.registration_tokens = RegistrationTokenStore(db)
        self.admin = AdminStore(db)
        self.rooms = RoomStore(db, caches)
        self.state = StateStore(db, caches, instance_name)
        self.memberships = MembershipStore(db, caches)
        self.events = EventStore(db, caches, instance_name, self.state, self.memberships)
        self.state.events = self.events
        self.receipts = ReceiptStore(db, gens["receipts"], instance_name, caches)
        self.presence = PresenceStore(db, gens["presence"])
        self.to_device = ToDeviceStore(db, gens["to_device"], instance_name)
        self.account_data = AccountDataStore(db, gens["account_data"], instance_name)
        self.device_lists = DeviceListStore(db, gens["device_lists"])
        self.push_rules = PushRuleStore(db, gens["push_rules"])
        self.push_actions = PushActionStore(db)
        self.pushers = PusherStore(db)
        self.threepid_sessions = ThreepidValidationStore(db)
        self.e2e_keys = E2EKeyStore(db, caches, invalidate)
        self.room_keys = RoomKeyStore(db)
        self.reports = ReportStore(db)
        self.openid_tokens = OpenIdTokenStore(db)
        self.relations = RelationStore(db)
        self.search = SearchStore(db)
        self.user_directory = self.accounts.directory
        self.cache_invalidations = CacheInvalidationStore(db, gens["caches"], instance_name)
        self.media = MediaStore(db)
        self.server_keys = ServerKeyStore(db)
        self.appservices = AppServiceStore(db)
        self.federation_sender = FederationSenderStore(db)
        self.federation = FederationStore(db)
        self.remote_devices = RemoteDeviceStore(db)
        self.remote_memberships = RemoteMembershipStore(db)


class HomeServer:
    def __init__(self, config: HomeserverConfig, db: Database, bus: Bus | None = None) -> None:
        self.config = config
        self.db = db
        self.server_name = config.server_name
        self.roles = ProcessRoles.from_config(config)
        self.caches = CacheRegistry()
        self.streams = Streams(db, self.roles)
        self.stores = Stores(db, self.streams, config.instance_name, self.caches,
                             self.invalidate_cache)
        self.listeners: list[Listener] = []
        self.notifier = Notifier()
        # Tests may hand several HomeServers one in-memory bus: a fleet in one process.
        self.bus: Bus = bus if bus is not None else self._make_bus()
        self.announcer = PositionAnnouncer(self.bus, config.instance_name, db)
        self.follower = ReplicationFollower(
            instance_name=config.instance_name, bus=self.bus, view=self.streams.view,
            streams=self.streams.definitions, generators=self.streams.written(),
            announcer=self.announcer, db=db)
        self.signing_key = self._load_signing_key()
        self._background: set[asyncio.Task[None]] = set()

    def _make_bus(self) -> Bus:
        """Redis pub/sub in a fleet, in-memory for a single process."""
        if self.config.redis.enabled:
            from myelin.replication.redis_bus import RedisBus

            return RedisBus(self.config.redis, f"myelin:{self.server_name}:replication")
        return InMemoryBus()

    def _load_signing_key(self) -> Any:
        return self._check_signing_key_file(self.config)

    @staticmethod
    def _check_signing_key_file(config: HomeserverConfig) -> Any:
        """Read the signing key named in config, or fail naming the key."""
        from myelin.config import ConfigError

        path = config.signing_key_path
        source = config.sources.get("signing_key_path")
        if path is None:
            from signedjson.key import generate_signing_key

            logger.warning("no signing_key_path configured: using an ephemeral signing key")
            return generate_signing_key("auto")
        try:
            with open(path, encoding="utf-8") as f:
                keys = read_signing_keys(f)
        except FileNotFoundError:
            raise ConfigError("signing_key_path", f"file not found: {path}", source) from None
        except Exception as e:
            raise ConfigError("signing_key_path", f"cannot read signing key {path}: {e}",
                              source) from None
        if not keys:
            raise ConfigError("signing_key_path", f"no signing key in {path}", source)
        return keys[0]

    @cached_property
    def fleet_status(self) -> FleetStatus:
        from myelin.app.fleet_status import FleetStatus

        return FleetStatus(self)

    @cached_property
    def http_metrics(self) -> HttpMetrics:
        from myelin.http.metrics import HttpMetrics

        return HttpMetrics()

    @cached_property
    def replication(self) -> ReplicationClient:
        from myelin.replication.http import ReplicationClient

        return ReplicationClient(self)

    @cached_property
    def replication_server(self) -> ReplicationServer:
        from myelin.replication.http import ReplicationServer

        return ReplicationServer(self)

    async def invalidate_cache(self, name: str, keys: list[Any] | None) -> None:
        """Invalidate a cache in every process: a row on the ``caches`` stream,
        applied everywhere (here too) once it arrives; we wait for that."""
        await self.stores.cache_invalidations.invalidate(name, keys)
        await self.streams.view.wait_for("caches", self.config.instance_name,
                                         self.streams.fence_position("caches"))

    # -- handlers ------------------------------------------------------------
    @cached_property
    def federation_client(self) -> FederationClient:
        from myelin.federation.client import FederationClient

        return FederationClient(self)

    @cached_property
    def keyring(self) -> Keyring:
        from myelin.federation.keyring import Keyring

        return Keyring(self)

    @cached_property
    def background_tasks(self) -> BackgroundTasks:
        from myelin.handlers.background import BackgroundTasks

        return BackgroundTasks(self)

    @cached_property
    def auth(self) -> AuthHandler:
        from myelin.handlers.auth import AuthHandler

        return AuthHandler(self)

    @cached_property
    def uia(self) -> UserInteractiveAuth:
        from myelin.handlers.uia import UserInteractiveAuth

        return UserInteractiveAuth(self)

    @cached_property
    def threepids(self) -> ThreepidHandler:
        from myelin.handlers.threepids import ThreepidHandler

        return ThreepidHandler(self)

    @cached_property
    def admin_users(self) -> AdminUsersHandler:
        from myelin.handlers.admin.users import AdminUsersHandler

        return AdminUsersHandler(self)

    @cached_property
    def admin_rooms(self) -> AdminRoomsHandler:
        from myelin.handlers.admin.rooms import AdminRoomsHandler

        return AdminRoomsHandler(self)

    @cached_property
    def server_notices(self) -> ServerNoticesHandler:
        from myelin.handlers.admin.notices import ServerNoticesHandler

        return ServerNoticesHandler(self)

    @cached_property
    def account_admin(self) -> AccountAdminHandler:
        from myelin.handlers.account_admin import AccountAdminHandler

        return AccountAdminHandler(self)

    @cached_property
    def registration(self) -> RegistrationHandler:
        from myelin.handlers.registration import RegistrationHandler

        return RegistrationHandler(self)

    @cached_property
    def devices(self) -> DeviceHandler:
        from myelin.handlers.devices import DeviceHandler

        return DeviceHandler(self)

    @cached_property
    def account_lifecycle(self) -> AccountLifecycleHandler:
        from myelin.handlers.account import AccountLifecycleHandler

        return AccountLifecycleHandler(self)

    @cached_property
    def ratelimiters(self) -> Ratelimiters:
        from myelin.http.ratelimiters import Ratelimiters

        return Ratelimiters(self.config)

    @cached_property
    def persister(self) -> EventPersister:
        from myelin.handlers.events import EventPersister

        return EventPersister(self)

    @cached_property
    def federation_events(self) -> FederationEventHandler:
        from myelin.federation.event_handler import FederationEventHandler

        return FederationEventHandler(self)

    @cached_property
    def event_creation(self) -> EventCreationHandler:
        from myelin.handlers.events import EventCreationHandler

        return EventCreationHandler(self)

    @cached_property
    def serializer(self) -> EventSerializer:
        from myelin.handlers.serialize import EventSerializer

        return EventSerializer(self)

    @cached_property
    def visibility(self) -> VisibilityHandler:
        from myelin.handlers.visibility import VisibilityHandler

        return VisibilityHandler(self)

    @cached_property
    def media(self) -> MediaRepository:
        from myelin.handlers.media import MediaRepository

        return MediaRepository(self)

    @cached_property
    def membership(self) -> MembershipHandler:
        from myelin.handlers.membership import MembershipHandler

        return MembershipHandler(self)

    @cached_property
    def federation_membership(self) -> FederationMembership:
        from myelin.federation.membership import FederationMembership

        return FederationMembership(self)

    @cached_property
    def room_creation(self) -> RoomCreationHandler:
        from myelin.handlers.rooms import RoomCreationHandler

        return RoomCreationHandler(self)

    @cached_property
    def room_reads(self) -> RoomReadHandler:
        from myelin.handlers.room_reads import RoomReadHandler

        return RoomReadHandler(self)

    @cached_property
    def redactions(self) -> RedactionHandler:
        from myelin.handlers.redactions import RedactionHandler

        return RedactionHandler(self)

    @cached_property
    def relations(self) -> RelationsHandler:
        from myelin.handlers.relations import RelationsHandler

        return RelationsHandler(self)

    @cached_property
    def spaces(self) -> SpaceHandler:
        from myelin.handlers.spaces import SpaceHandler

        return SpaceHandler(self)

    @cached_property
    def room_upgrades(self) -> RoomUpgradeHandler:
        from myelin.handlers.room_upgrades import RoomUpgradeHandler

        return RoomUpgradeHandler(self)

    @cached_property
    def typing(self) -> TypingHandler:
        from myelin.handlers.typing import TypingHandler

        return TypingHandler(self)

    @cached_property
    def receipts(self) -> ReceiptHandler:
        from myelin.handlers.receipts import ReceiptHandler

        return ReceiptHandler(self)

    @cached_property
    def presence(self) -> PresenceHandler:
        from myelin.handlers.presence import PresenceHandler

        return PresenceHandler(self)

    @cached_property
    def to_device(self) -> ToDeviceHandler:
        from myelin.handlers.to_device import ToDeviceHandler

        return ToDeviceHandler(self)

    @cached_property
    def account_data(self) -> AccountDataHandler:
        from myelin.handlers.account_data import AccountDataHandler

        return AccountDataHandler(self)

    @cached_property
    def sync(self) -> SyncHandler:
        from myelin.handlers.sync import SyncHandler

        return SyncHandler(self)

    @cached_property
    def initial_sync(self) -> InitialSyncHandler:
        from myelin.handlers.initial_sync import InitialSyncHandler

        return InitialSyncHandler(self)

    @cached_property
    def filters(self) -> FilterHandler:
        from myelin.handlers.filters import FilterHandler

        return FilterHandler(self)

    @cached_property
    def directory(self) -> DirectoryHandler:
        from myelin.handlers.directory import DirectoryHandler

        return DirectoryHandler(self)

    @cached_property
    def profile(self) -> ProfileHandler:
        from myelin.handlers.profile import ProfileHandler

        return ProfileHandler(self)

    @cached_property
    def push_rules(self) -> PushRulesHandler:
        from myelin.handlers.push_rules import PushRulesHandler

        return PushRulesHandler(self)

    @cached_property
    def push_actions(self) -> PushActionsHandler:
        from myelin.handlers.push_actions import PushActionsHandler

        return PushActionsHandler(self)

    @cached_property
    def pushers(self) -> PusherHandler:
        from myelin.handlers.pushers import PusherHandler

        return PusherHandler(self)

    @cached_property
    def identity(self) -> IdentityHandler:
        """Third-party invites through identity servers."""
        from myelin.handlers.identity import IdentityHandler

        return IdentityHandler(self)

    @cached_property
    def mailer(self) -> Mailer | None:
        """The SMTP sender, when there is an ``email`` config section."""
        from myelin.push.mailer import Mailer

        email = self.config.email
        return Mailer(email, self.server_name) if email is not None else None

    @cached_property
    def email_validation(self) -> EmailValidation | None:
        from myelin.push.mailer import EmailValidation

        return EmailValidation(self, self.mailer) if self.mailer is not None else None

    @cached_property
    def pusher_pool(self) -> PusherPool:
        """The pushers this instance delivers (the ``pusher`` job)."""
        from myelin.push.pool import PusherPool

        return PusherPool(self)

    @cached_property
    def e2e_keys(self) -> E2EKeysHandler:
        from myelin.handlers.e2e_keys import E2EKeysHandler

        return E2EKeysHandler(self)

    @cached_property
    def room_keys(self) -> RoomKeysHandler:
        from myelin.handlers.room_keys import RoomKeysHandler

        return RoomKeysHandler(self)

    @cached_property
    def reports(self) -> ReportHandler:
        from myelin.handlers.reports import ReportHandler

        return ReportHandler(self)

    @cached_property
    def turn(self) -> TurnHandler:
        from myelin.handlers.voip import TurnHandler

        return TurnHandler(self.config.voip)

    @cached_property
    def appservices(self) -> AppServiceHandler:
        from myelin.handlers.appservices import AppServiceHandler

        return AppServiceHandler(self)

    @cached_property
    def appservice_sender(self) -> AppServiceSender:
        from myelin.appservice.sender import AppServiceSender

        return AppServiceSender(self)

    @cached_property
    def search(self) -> SearchHandler:
        from myelin.handlers.search import SearchHandler

        return SearchHandler(self)

    @cached_property
    def third_party_invites(self) -> ThirdPartyInviteExchange:
        from myelin.federation.third_party_invites import ThirdPartyInviteExchange

        return ThirdPartyInviteExchange(self)

    @cached_property
    def user_directory(self) -> UserDirectoryHandler:
        from myelin.handlers.user_directory import UserDirectoryHandler

        return UserDirectoryHandler(self)

    @cached_property
    def federation_sender(self) -> FederationSender:
        from myelin.federation.sender import FederationSender

        return FederationSender(self)

    @cached_property
    def federation_edus(self) -> EduHandler:
        from myelin.federation.edus import EduHandler

        return EduHandler(self)

    @cached_property
    def federation_queries(self) -> FederationQueries:
        from myelin.federation.queries import FederationQueries

        return FederationQueries(self)

    @cached_property
    def remote_devices(self) -> RemoteDeviceLists:
        from myelin.federation.device_lists import RemoteDeviceLists

        return RemoteDeviceLists(self)

    # -- helpers -------------------------------------------------------------
    def qualify_user_id(self, user: str) -> str:
        """A bare localpart or a full user id → a full user id."""
        if user.startswith("@") and ":" in user:
            return user
        return f"@{user.lstrip('@')}:{self.server_name}"

    def is_mine(self, user_id: str) -> bool:
        return user_id.rpartition(":")[2] == self.server_name or \
            user_id.split(":", 1)[-1] == self.server_name

    @staticmethod
    def trust_forwarded_for(raw: web.BaseRequest) -> bool:
        """True if the request came in on a listener with ``x_forwarded: true``."""
        from myelin.http.server import X_FORWARDED_KEY

        return bool(raw.get(X_FORWARDED_KEY, False))

    def _follow_streams(self) -> None:
        """What every process does with every stream's rows: caches first,
        then wake whoever waits once the rows are readable."""
        follow = self.follower
        notifier = self.notifier
        events = self.stores.events
        # Only a process that serves clients reads events back: others skip
        # decoding what the rows carry of them.
        events.fill_from_rows = any("client" in listener.resources
                                    for listener in self.config.listeners)
        follow.on_rows("events", events.on_events_rows)
        follow.on_rows("events", self.stores.state.on_events_rows)
        follow.on_rows("events", self.stores.memberships.on_events_rows)
        follow.on_rows("events", self.relations.on_events_rows)
        # A room's events are read at its persister's position (SyncRequest.events_upper):
        # wake its readers as soon as that writer's rows are here.
        follow.on_writer_advanced("events", lambda _, rows: notifier.notify(
            rooms={r.room_id for _, r in rows},
            users={r.state_key for _, r in rows if r.membership is not None and r.state_key}))
        follow.on_rows("receipts", self.stores.receipts.on_receipts_rows)
        follow.on_visible("receipts", lambda _, rows: notifier.notify(
            rooms={r.room_id for _, r in rows if r.receipt_type != "m.read.private"},
            users={r.user_id for _, r in rows if r.receipt_type == "m.read.private"}))
        follow.on_rows("typing", self.typing.on_typing_rows)
        follow.on_visible("typing", lambda _, rows: notifier.notify(
            rooms={r.room_id for _, r in rows}))
        follow.on_visible("to_device", lambda _, rows: notifier.notify(
            users={r.user_id for _, r in rows}))
        follow.on_visible("account_data", lambda _, rows: notifier.notify(
            users={r.user_id for _, r in rows}))
        follow.on_visible("push_rules", lambda _, rows: notifier.notify(
            users={r.user_id for _, r in rows}))
        # The push actions indexer's caches of rulesets and ignore lists.
        follow.on_rows("push_rules", self.push_actions.on_push_rules_rows)
        follow.on_rows("account_data", self.push_actions.on_account_data_rows)
        follow.on_rows("presence", self.presence.on_presence_rows)
        follow.on_visible("presence", lambda _, rows: self._notify_room_mates(
            {r.user_id for _, r in rows}))
        follow.on_visible("device_lists", lambda _, rows: self._notify_room_mates(
            {r.user_id for _, r in rows}))
        follow.on_rows("caches", self._apply_cache_rows)
        follow.on_rows("events", self.federation_queries.on_events_rows)
        if self.roles.runs("background_tasks"):
            # Remote users' cached device lists go once we share no room with them.
            follow.on_writer_advanced("events", self.remote_devices.on_events_rows)
        self.auth.follow_caches(self.caches)
        self.federation_sender.follow()

    def _apply_cache_rows(self, writer: str, rows: Any) -> None:
        for _, row in rows:
            self.caches.invalidate(row.cache_name, decode_keys(row))

    def _notify_room_mates(self, users: set[str]) -> None:
        """Wake everyone who shares a room with ``users`` (and the users)."""
        async def wake() -> None:
            rooms: set[str] = set()
            for user_id in users:
                rooms.update(m.room_id for m in
                             await self.stores.memberships.get_rooms_for_user(user_id))
            self.notifier.notify(rooms=rooms, users=users)

        task = asyncio.get_running_loop().create_task(wake())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        """Load stream positions, follow the streams and start this process's jobs."""
        await self.stores.state.setup()
        await self.streams.setup()
        for name, generator in self.streams.written().items():
            self.announcer.attach(name, generator)
        self._follow_streams()
        updates_directory = self.roles.runs("user_dir")
        if updates_directory:
            self.user_directory.follow()
        pushes = self.roles.runs("pusher") and self.config.push.enabled
        if pushes:
            self.pusher_pool.follow()
        if self.roles.runs("appservice") and self.appservices.services:
            self.appservice_sender.follow()
        start_bus = getattr(self.bus, "start", None)
        if start_bus is not None:
            await start_bus()
        await self.follower.start()
        if updates_directory:
            self.user_directory.start_updater()
        if pushes:
            await self.pusher_pool.start()
        if self.roles.is_main and self.appservices.services:
            await self.appservices.register_senders()
        if "appservice_sender" in self.__dict__:
            self.appservice_sender.start()
        self.announcer.start()
        self.fleet_status.start()
        await self.presence.start()
        await self.federation_sender.start()
        if self.roles.runs("background_tasks"):
            self.background_tasks.start()
        if self.roles.runs("media"):
            self.media.start_jobs()

    async def stop(self) -> None:
        """Stop background work; wake long-polls so they can finish."""
        self.notifier.shutdown()
        await self.background_tasks.stop()
        if "media" in self.__dict__:
            await self.media.stop()
        if "user_directory" in self.__dict__:
            await self.user_directory.stop_updater()
        if "pusher_pool" in self.__dict__:
            await self.pusher_pool.stop()
        if "identity" in self.__dict__:
            await self.identity.close()
        if "appservice_sender" in self.__dict__:
            await self.appservice_sender.stop()
        if "appservices" in self.__dict__:
            await self.appservices.close()
        await self.presence.stop()
        if "federation_sender" in self.__dict__:
            await self.federation_sender.stop()
        if "remote_devices" in self.__dict__:
            await self.remote_devices.stop()
        self.typing.stop()
        await self.fleet_status.stop()
        await self.follower.stop()
        await self.announcer.stop()
        await self.bus.close()
        if "replication" in self.__dict__:
            await self.replication.close()
        if "federation_client" in self.__dict__:
            await self.federation_client.close()

    async def health_problems(self) -> list[str]:
        """What this process cannot reach (empty when healthy): /health and status."""
        problems = []
        try:
            await self.db.fetchval("SELECT 1")
        except Exception as e:
            problems.append(f"database unreachable: {e}")
        if getattr(self.bus, "connected", True) is False:
            problems.append("redis unreachable")
        return problems

    async def status(self) -> dict[str, Any]:
        """What this process is and how far it has followed each stream."""
        problems = await self.health_problems()
        redis = getattr(self.bus, "connected", None)
        streams = self.streams.view.snapshot()
        written = self.streams.written()
        for name, info in streams.items():
            if name in written:
                info["written_here"] = written[name].current_position
        return {"instance": self.config.instance_name, "app": self.config.worker_app,
                "roles": self.roles.describe(),
                "database": not any(p.startswith("database") for p in problems),
                "redis": redis,
                "streams": streams, "caches": self.caches.stats(),
                "replication": {"rows_applied": self.follower.rows_applied,
                                "gaps_filled": self.follower.gaps_filled,
                                "disagreeing": self.follower.disagreeing},
                "requests": {"per_second": self.http_metrics.rate.per_second(),
                             "errors_per_second": self.http_metrics.error_rate.per_second()},
                "fleet": self.fleet_status.fleet()}

    async def leave_all_rooms(self, user_id: str) -> None:
        await self.membership.leave_all_rooms(user_id)
