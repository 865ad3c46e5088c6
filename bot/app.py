"""The composition root: the only module that knows every part. It runs in three phases:

1. **resolve** (network): log in, and turn the configured room aliases into room ids;
2. **wire** (pure, no I/O): build the store's services, the domain, the commands and the Matrix
   parts from the config, the database and the client — testable on its own;
3. **serve**: run the sync loop, the outbox courier and the jobs in one event loop, until stopped;
   everything started registers how it stops on one AsyncExitStack, so shutdown runs in reverse
   order whatever failed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from nio import AsyncClient, ProfileGetDisplayNameResponse, RoomResolveAliasResponse
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_incrementing,
)

from bot import startup_gc
from bot.commands.catalog import all_commands
from bot.commands.executor import CommandExecutor
from bot.commands.services import LoginSettings, Services
from bot.community.access import GatedRoom
from bot.community.access_service import AccessService
from bot.community.announcements import Announcements
from bot.community.assistant_media import AssistantMedia, MediaSettings
from bot.community.audit import AuditLog
from bot.community.chat import ChatService, ChatSettings
from bot.community.identity import IdentityService
from bot.community.identity_sync import IdentitySync
from bot.community.invite_tokens import InviteTokens
from bot.community.login_links import LoginLinks
from bot.community.members import MemberAdmin
from bot.community.moderation import Moderation
from bot.community.outbox import Outbox
from bot.community.policy_lists import PolicyLists
from bot.community.protection_settings import CommunityProtections
from bot.community.protections import ProtectionService
from bot.community.room_upgrades import RoomUpgrades
from bot.community.summaries import Summaries, SummarySettings
from bot.community.users import UserService
from bot.community.welcome import WelcomeService
from bot.config import Config
from bot.data_dir import make_private
from bot.errors import OperatorError
from bot.jobs import Jobs, schedule_jobs
from bot.leader import LeaderLease
from bot.llm.openai_compatible import OpenAICompatibleModel
from bot.llm.openai_media import OpenAICompatibleMedia
from bot.matrix.access_rooms import MatrixGatedRooms
from bot.matrix.chat_relay import ChatRelay
from bot.matrix.client import CONNECT_ERRORS, build_client, log_in
from bot.matrix.direct import DirectMessenger
from bot.matrix.dispatch import Dispatcher
from bot.matrix.invites import InvitePolicy
from bot.matrix.media import MatrixMedia
from bot.matrix.media_relay import MediaRelay
from bot.matrix.outbox_courier import OutboxCourier
from bot.matrix.policy_port import MatrixPolicyPort
from bot.matrix.protection_stage import ProtectionStage
from bot.matrix.readiness import MatrixReadiness
from bot.matrix.redaction_pacer import RedactionPacer
from bot.matrix.resume import resume_unfinished
from bot.matrix.room_actions import MatrixRoomActions
from bot.matrix.room_history import MatrixRoomHistory
from bot.matrix.room_kinds import RoomKinds
from bot.matrix.sender import Sender
from bot.matrix.state_watch import StateWatch, upgrade_follower
from bot.matrix.synapse_admin import SynapseAdmin
from bot.matrix.sync import SyncLoop
from bot.matrix.welcomer import Welcomer
from bot.metrics import NO_METRICS, Metrics, PrometheusMetrics, load_metrics, serve_metrics
from bot.store.database import Database
from bot.store.direct_rooms import DirectRooms
from bot.store.events import EventLedger
from bot.store.migrate import upgrade_to_head
from bot.store.models import utcnow
from bot.store.room_carry import successors
from bot.store.room_protections import RoomProtectionStore
from web_callback.app import create_app, serve
from web_callback.providers import HttpClient, configured_providers

if TYPE_CHECKING:  # loaded by _secure(), beside the first sync (with cryptography)
    from bot.matrix.account_recovery import AccountRecovery
    from bot.matrix.cross_signing import Restore

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 10.0
RESUME_WINDOW = timedelta(hours=1)  # older unfinished work is left alone: the moment has passed


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_chat(
    cfg: Config, db: Database, *, identity: IdentityService, users: UserService,
    metrics: Metrics = NO_METRICS,
) -> ChatService:  # fmt: skip
    gpt = cfg.gpt
    model = OpenAICompatibleModel(
        base_url=gpt.base_url, api_key=_secret(gpt.api_key), temperature=gpt.temperature,
        timeout=gpt.timeout, max_retries=gpt.max_retries, stream=gpt.stream,
    )  # fmt: skip
    model.metrics = metrics
    settings = ChatSettings.from_config(gpt, command_prefix=cfg.matrix.command_prefix)
    return ChatService(db, settings, model, identity=identity, users=users)


def build_media(cfg: Config, db: Database, chat: ChatService) -> AssistantMedia:
    """Images and voice for the assistant, through the same endpoint (each feature off until
    configured); the chat service sees images in turns through it."""
    gpt = cfg.gpt
    model = OpenAICompatibleMedia(
        base_url=gpt.base_url, api_key=_secret(gpt.api_key), timeout=gpt.timeout,
        max_retries=gpt.max_retries,
    )  # fmt: skip
    media = AssistantMedia(db, MediaSettings.from_config(gpt), model, chat)
    chat.media = media
    return media


def build_summaries(cfg: Config, chat: ChatService, client: AsyncClient) -> Summaries:
    """`!summary` and room context, reading history through the bot's client."""
    gpt = cfg.gpt
    settings = SummarySettings(
        default_messages=gpt.summary_default_messages, max_messages=gpt.summary_max_messages,
        max_events=gpt.summary_max_events, max_chars=gpt.summary_max_chars,
        token_budget=gpt.summary_token_budget, command_prefix=cfg.matrix.command_prefix,
    )  # fmt: skip
    return Summaries(chat, MatrixRoomHistory(client), settings, bot_user_id=client.user_id)


# -- phase 1: resolve (network) -------------------------------------------------------------------


@dataclass(frozen=True)
class Rooms:
    """The configured rooms as room ids."""

    admin_room_id: str | None
    community_rooms: list[str]
    welcome_rooms: list[str]
    upgraded: dict[str, str] = field(default_factory=dict)  # old room -> its replacement


async def follow_upgrades(db: Database, rooms: Rooms) -> Rooms:
    """Configured room ids of rooms since upgraded mean their replacements (room_upgrades.py)."""
    async with db.transaction() as session:
        newest = await successors(session)
    if not newest:
        return rooms
    return replace(
        rooms, upgraded=newest,
        community_rooms=list(dict.fromkeys(newest.get(r, r) for r in rooms.community_rooms)),
        welcome_rooms=list(dict.fromkeys(newest.get(r, r) for r in rooms.welcome_rooms)),
    )  # fmt: skip


async def log_in_patiently(client: AsyncClient, cfg: Config) -> None:
    """Log in, waiting out a homeserver that is not reachable yet (growing pauses up to 60 s)."""
    m = cfg.matrix
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((*CONNECT_ERRORS, ConnectionError)),
        wait=wait_exponential(multiplier=2, max=60),
        before_sleep=lambda state: log.warning(
            "matrix.unreachable", homeserver=m.homeserver,
            error=str(state.outcome.exception()) if state.outcome else "",
            retry_in_s=state.upcoming_sleep,
        ),
    ):  # fmt: skip
        with attempt:
            await log_in(
                client, data_dir=cfg.data.dir, password=_secret(m.password),
                access_token=_secret(m.access_token), device_name=m.device_name,
            )  # fmt: skip


async def _resolve_admin_room(client: AsyncClient, room: str | None) -> str | None:
    if room is None or room.startswith("!"):
        return room
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(CONNECT_ERRORS), stop=stop_after_attempt(5),
            wait=wait_incrementing(start=2, increment=2), reraise=True,
            before_sleep=lambda state: log.warning(
                "matrix.admin_room_unresolved", room=room, attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else "",
            ),
        ):  # fmt: skip
            with attempt:
                response = await client.room_resolve_alias(room)
    except CONNECT_ERRORS:
        raise OperatorError(
            f"matrix.admin_room {room} could not be resolved: the homeserver is not answering"
        ) from None
    if not isinstance(response, RoomResolveAliasResponse):
        raise OperatorError(f"matrix.admin_room {room} does not resolve: {response.message}")
    return response.room_id


async def _resolve_all(client: AsyncClient, rooms: Sequence[str], what: str) -> list[str]:
    """Room ids for configured ids or aliases; an alias that does not resolve is logged."""
    resolved = []
    for room in rooms:
        if room.startswith("!"):
            resolved.append(room)
            continue
        try:
            response = await client.room_resolve_alias(room)
        except CONNECT_ERRORS as problem:
            log.warning("config.room_unresolved", setting=what, room=room, error=str(problem))
            continue
        if isinstance(response, RoomResolveAliasResponse):
            resolved.append(response.room_id)
        else:
            log.warning("config.room_unknown", setting=what, room=room, error=response.message)
    return resolved


async def resolve_rooms(client: AsyncClient, cfg: Config) -> Rooms:
    return Rooms(
        admin_room_id=await _resolve_admin_room(client, cfg.matrix.admin_room),
        community_rooms=await _resolve_all(
            client, cfg.matrix.community_rooms, "matrix.community_rooms"
        ),
        welcome_rooms=await _resolve_all(client, cfg.welcome.rooms, "welcome.rooms"),
    )


# -- phase 2: wire (pure) ---------------------------------------------------------------------------


@dataclass
class Parts:
    """Everything the bot runs, wired together."""

    chat: ChatService
    sender: Sender
    outbox: Outbox
    login_links: LoginLinks
    welcome: WelcomeService
    announcements: Announcements
    moderation: Moderation
    welcomer: Welcomer
    ledger: EventLedger
    relay: ChatRelay
    dispatcher: Dispatcher
    courier: OutboxCourier
    sync: SyncLoop
    identity_sync: IdentitySync
    provider_http: HttpClient  # the identity providers' client, for resyncs
    lists: PolicyLists | None = None  # shared ban lists
    state_watch: StateWatch | None = None  # acts on ban-list rules, arrivals and tombstones
    protections: ProtectionService | None = None  # the stage between router and handlers
    media_files: MatrixMedia | None = None  # members' files read, the bot's uploaded


def wire(
    cfg: Config, db: Database, client: AsyncClient, rooms: Rooms, *, long_poll_ms: int | None,
    metrics: Metrics = NO_METRICS,
) -> Parts:  # fmt: skip
    """Build every part from the config; no I/O happens here. Every part reports to `metrics`."""
    me = client.user_id
    users = UserService(db, cfg.roles.admins)
    identity = IdentityService.from_config(cfg, db)
    chat = build_chat(cfg, db, identity=identity, users=users, metrics=metrics)
    media = build_media(cfg, db, chat)
    summaries = build_summaries(cfg, chat, client)
    login_links = LoginLinks(db, cfg.sso.link_ttl)
    login = LoginSettings(
        public_url=cfg.web.public_url,
        link_ttl_minutes=cfg.sso.link_ttl // timedelta(minutes=1),
        providers={p.id: p.display_name for p in cfg.sso.providers},
    )
    sender = Sender(client)
    sender.metrics = metrics
    direct = DirectMessenger(client, DirectRooms(db), encryption=cfg.matrix.encryption)
    outbox = Outbox(db)
    kinds = RoomKinds(client, community_rooms=rooms.community_rooms,
                      admin_room_id=rooms.admin_room_id)  # fmt: skip
    room_actions = MatrixRoomActions(client, sender, direct, kinds)
    welcome = WelcomeService(db, identity, rooms=rooms.welcome_rooms, template=cfg.welcome.message)
    announcements = Announcements(db, cfg.scheduler.timezone, cfg.scheduler.missed_run_grace)
    moderation = Moderation(db, room_actions, users, me, admin_room_id=rooms.admin_room_id)
    for old, new in rooms.upgraded.items():
        kinds.follow_upgrade(old, new)
    room_actions.successors.update(rooms.upgraded)
    policy_port = MatrixPolicyPort(client, room_actions, kinds)
    lists = PolicyLists(db, policy_port, users, bot_user_id=me, admin_room_id=rooms.admin_room_id)
    # A public ban-list room would look like a community room when community_rooms is empty.
    kinds.set_apart = lists.is_list_room
    upgrades = RoomUpgrades(
        db, policy_port, bot_user_id=me, admin_room_id=rooms.admin_room_id,
        followed=kinds.is_community,
    )  # fmt: skip
    upgrades.followers += [upgrade_follower(kinds, room_actions, welcome), lists.follow_upgrade]
    access = AccessService(
        db, [GatedRoom.from_config(r) for r in cfg.access.rooms],
        MatrixGatedRooms(room_actions, me), admins=cfg.roles.admins, bot_user_id=me,
        admin_room_id=rooms.admin_room_id, command_prefix=cfg.matrix.command_prefix,
    )  # fmt: skip
    admin_token = _secret(cfg.synapse.admin_token)  # unset: no invite tokens
    admin_api = SynapseAdmin(cfg.matrix.homeserver, admin_token) if admin_token else None
    invite_tokens = InviteTokens(db, admin_api) if admin_api else None
    provider_http = HttpClient()
    assert identity.tokens is not None
    identity_sync = IdentitySync(
        db, configured_providers(cfg, provider_http), identity.tokens,
        group_roles=identity.group_roles, bootstrap_admins=cfg.roles.admins,
        provider_names=login.providers, admin_room=rooms.admin_room_id,
        rooms_by_group=bool(cfg.access.rooms), interval=cfg.sso.resync_interval,
        login_command=f"{cfg.matrix.command_prefix}login",
    )  # fmt: skip
    protections = ProtectionService(
        RoomProtectionStore(db), CommunityProtections.from_config(cfg.protections), room_actions,
        users, AuditLog(db), bot_user_id=me, admin_room_id=rooms.admin_room_id,
        prefix=cfg.matrix.command_prefix,
    )  # fmt: skip
    services = Services(
        users=users, audit=AuditLog(db), identity=identity, chat=chat, login_links=login_links,
        login=login, members=MemberAdmin(db, cfg.roles.admins, me, group_roles=identity.group_roles,
                            rooms_by_group=bool(cfg.access.rooms)), moderation=moderation,
        welcome=welcome, announcements=announcements, bot_user_id=me, invite_tokens=invite_tokens,
        identity_sync=identity_sync, access=access, lists=lists, protections=protections, summaries=summaries,
        media=media,
    )  # fmt: skip
    executor = CommandExecutor(all_commands(), services, prefix=cfg.matrix.command_prefix,
                               admin_room_id=rooms.admin_room_id)  # fmt: skip
    welcomer = Welcomer(
        welcome, sender, room_name=room_actions.room_name, links=login_links, outbox=outbox,
        login=login, batch_window_s=cfg.welcome.batch_window.total_seconds(),
        dm_unlinked=cfg.welcome.dm_unlinked, prefix=cfg.matrix.command_prefix,
    )  # fmt: skip
    ledger = EventLedger(db, me)
    relay = ChatRelay(chat, sender, stream=cfg.gpt.stream)
    relay.room_context = summaries.context_for_question
    invites = InvitePolicy(cfg.matrix.autojoin_from, cfg.roles.admins)
    invites.refusal = lists.invite_refusal  # rooms, inviters and servers the ban lists ban
    dispatcher = Dispatcher(
        client, ledger=ledger, executor=executor, sender=sender, direct=direct,
        invites=invites, prefix=cfg.matrix.command_prefix, relay=relay, welcomer=welcomer,
    )  # fmt: skip
    courier = OutboxCourier(
        outbox, sender, direct, compose_login_link=welcomer.compose_login_link,
        update_access=access.apply_for if access.configured else None,
    )  # fmt: skip
    dispatcher.member_joined = courier.recipient_joined
    files = MatrixMedia(client, sender, timeout_s=cfg.gpt.media_timeout.total_seconds())
    media.source = files
    media_relay = MediaRelay(media, files, relay, sender, client, ledger)
    relay.after_answer = media_relay.speak_answer
    dispatcher.use_media(media_relay, files.send_generated)
    protections.metrics = metrics
    dispatcher.protections = ProtectionStage(client, kinds, protections)
    room_actions.redactions = RedactionPacer(
        client, sender, interval=60 / cfg.protections.redactions_per_minute
    )
    room_actions.redactions.failed = protections.redaction_failed
    state_watch = StateWatch(client, lists, upgrades, kinds)
    dispatcher.sync_watchers.append(state_watch.on_sync)
    dispatcher.metrics = metrics
    sync = SyncLoop(
        client, ledger, dispatcher, encryption=cfg.matrix.encryption, trust=cfg.matrix.trust,
        **({"long_poll_ms": long_poll_ms} if long_poll_ms else {}),
    )  # fmt: skip
    sync.metrics = metrics
    return Parts(
        chat=chat, sender=sender, outbox=outbox, login_links=login_links, welcome=welcome,
        announcements=announcements, moderation=moderation, welcomer=welcomer, ledger=ledger,
        relay=relay, dispatcher=dispatcher, courier=courier, sync=sync,
        identity_sync=identity_sync, provider_http=provider_http, lists=lists,
        state_watch=state_watch, protections=protections, media_files=files,
    )  # fmt: skip


# -- phase 3: serve -------------------------------------------------------------------------------


class BotApp:
    def __init__(
        self,
        config: Config,
        *,
        long_poll_ms: int | None = None,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        job_poll_s: float = 5.0,
        on_lease_lost: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self._job_poll_s = job_poll_s
        self._shutdown_grace_s = shutdown_grace_s
        self._long_poll_ms = long_poll_ms
        make_private(config.data.dir)
        self.db = Database(config.database.url)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.parts: Parts | None = None
        self.recovery: AccountRecovery | None = None  # secret storage and key backup
        self.jobs: Jobs | None = None
        self.metrics: Metrics = NO_METRICS  # real ones when [metrics] listen is set
        self.readiness = MatrixReadiness(config.web.ready_max_sync_age)  # /readyz
        db_cfg = config.database
        # `community-bot run` exits at once (bot.leader.exit_now); in a test's loop, it stops.
        self.lease = LeaderLease(self.db, config.matrix.user_id, lease=db_cfg.leader_lease,
                                 heartbeat=db_cfg.leader_heartbeat,
                                 on_lost=on_lease_lost or self.stop)  # fmt: skip
        self._lease_keeper: asyncio.Task[None] | None = None
        self.readiness.standby = lambda: self.lease.standby

    # What tests and benchmarks look at, once wired.
    sender = property(lambda self: self.parts.sender if self.parts else None)
    courier = property(lambda self: self.parts.courier if self.parts else None)
    welcomer = property(lambda self: self.parts.welcomer if self.parts else None)
    ledger = property(lambda self: self.parts.ledger if self.parts else None)

    def stop(self) -> None:
        self._stop.set()

    async def wait_ready(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def run(self) -> None:
        cfg = self.config
        try:
            async with AsyncExitStack() as stack:
                stack.push_async_callback(self.db.close)
                login: tuple[AsyncClient, asyncio.Task[None]] | None = None
                if not self.lease.enabled:  # one process: it logs in while the store gets ready
                    login = self._log_in(stack)
                await self._prepare_store()
                # The web app serves even while the homeserver is unreachable.
                await self._serve_metrics(stack)
                web = create_app(cfg, self.db, on_linked=self._outbox_waiting,
                                 readiness=self.readiness)  # fmt: skip
                runner = await serve(web, cfg.web.listen_host, cfg.web.listen_port)
                stack.push_async_callback(runner.cleanup)
                startup_gc.resume()  # what the imports and the store built is kept (frozen)
                # Active/standby: only the lease holder goes on (the standby serves the web app
                # meanwhile); the lease is released last, after handlers finished their replies.
                if not await self._lead(stack):
                    return
                client, logging_in = login or self._log_in(stack)  # a standby has not yet
                self.readiness.client = client
                started = utcnow()  # claims from before this moment belong to a previous run
                if not await self._until_stopped(logging_in):
                    return
                rooms = await follow_upgrades(self.db, await resolve_rooms(client, cfg))
                self.parts = wire(cfg, self.db, client, rooms, long_poll_ms=self._long_poll_ms,
                                  metrics=self.metrics)  # fmt: skip
                self._watch(self.parts)
                if self.lease.enabled:  # a leader whose lease is gone neither claims nor sends
                    self.parts.ledger.fence = self.lease.fence
                    self.parts.sender.fence = self.lease.ensure_held
                await self._serve(client, self.parts, stack, started)
        finally:
            log.info("bot.stopped")

    def _log_in(self, stack: AsyncExitStack) -> tuple[AsyncClient, asyncio.Task[None]]:
        """The Matrix client, and its login under way (waiting out an unreachable homeserver)."""
        cfg = self.config
        client = build_client(cfg.matrix.homeserver, cfg.matrix.user_id, cfg.data.dir,
                              encryption=cfg.matrix.encryption)  # fmt: skip
        stack.push_async_callback(client.close)
        logging_in = asyncio.create_task(log_in_patiently(client, cfg), name="log in")
        stack.push_async_callback(_abandon, logging_in)
        return client, logging_in

    async def _lead(self, stack: AsyncExitStack) -> bool:
        """Wait until this process holds the leader lease (at once with SQLite), then keep it
        for as long as the process runs. False when stopped while waiting."""
        if not await self._until_stopped(asyncio.create_task(self.lease.acquire())):
            return False
        stack.push_async_callback(self.lease.release)
        self._lease_keeper = asyncio.create_task(self.lease.keep(), name="leader-lease")
        stack.push_async_callback(_cancel_all, [self._lease_keeper])
        cfg = self.config
        if (
            self.lease.enabled
            and cfg.matrix.encryption
            and not any((cfg.data.dir / "crypto").glob("*.db"))
            and await EventLedger(self.db, cfg.matrix.user_id).sync_token() is not None
        ):
            # The bot ran before, on another data dir: this one's device starts without keys.
            log.warning("leader.data_dir_not_shared", data_dir=str(cfg.data.dir),
                        hint="active/standby needs one data dir on storage both hosts share")  # fmt: skip
        return True

    async def _serve_metrics(self, stack: AsyncExitStack) -> None:
        """With `[metrics] listen`: the metrics, and their listener (before the Matrix login, so
        a bot that cannot log in is seen too)."""
        address = self.config.metrics.address
        self.metrics = metrics = await load_metrics(address is not None)
        if address is None or not isinstance(metrics, PrometheusMetrics):
            return
        metrics.watch_database(self.db.engine)
        stack.push_async_callback((await serve_metrics(metrics, *address)).cleanup)

    def _watch(self, parts: Parts) -> None:
        """What /readyz and the metrics read when asked: the sync's clock, the outbox."""
        sync = parts.sync
        self.readiness.last_synced = lambda: sync.last_synced
        self.metrics.watch_sync(lambda: sync.last_synced)
        self.metrics.watch_outbox(parts.outbox.backlog)

    async def _prepare_store(self) -> None:
        before, after = await upgrade_to_head(self.db)
        if before != after:
            log.info("store.migrated", from_revision=before, to_revision=after,
                     backend=self.db.backend)  # fmt: skip

    def _outbox_waiting(self) -> None:
        if self.parts is not None:
            self.parts.courier.wake()

    async def _serve(
        self, client: AsyncClient, parts: Parts, stack: AsyncExitStack, started: datetime
    ) -> None:
        cfg = self.config
        if released := await parts.chat.release_held_tokens():
            log.info("chat.reservations_released", members=released)
        parts.dispatcher.learn_display_name(self._display_name(client))
        # Shutdown, in reverse: handlers finish (or leave notices), greetings go out, the
        # background tasks stop, the jobs stop; the model's and the media's connections close
        # last, once no answer streams any more.
        stack.push_async_callback(parts.chat.close)
        if parts.media_files is not None:
            stack.push_async_callback(parts.media_files.close)
        stack.push_async_callback(parts.dispatcher.drain, self._shutdown_grace_s)
        stack.push_async_callback(parts.welcomer.flush)
        tasks: list[asyncio.Task[None]] = []
        stack.push_async_callback(_cancel_all, tasks)
        self.jobs = jobs = Jobs()
        stack.callback(jobs.stop)
        stack.push_async_callback(parts.provider_http.aclose)
        stack.push_async_callback(parts.identity_sync.stop)
        if parts.protections is not None:
            await parts.protections.start()
            stack.push_async_callback(parts.protections.stop)
            stack.push_async_callback(parts.moderation.actions.redactions.stop)
        tasks.append(asyncio.create_task(parts.sync.run(), name="sync"))
        # Cross-signing and key backup start once the device's keys are up, while the first
        # sync is handled, and are done before the bot says it is ready.
        securing = (
            asyncio.create_task(self._secure(client, parts.sync), name="secure")
            if cfg.matrix.encryption else None
        )  # fmt: skip
        stack.push_async_callback(self._close_recovery)
        stack.push_async_callback(_cancel_all, [securing] if securing else [])  # stopped first
        if not await self._until_stopped(asyncio.create_task(parts.sync.ready.wait()), tasks):
            return
        if securing is not None and not await self._until_stopped(securing, tasks):
            return
        tasks.append(asyncio.create_task(parts.courier.run(), name="outbox"))
        if parts.state_watch is not None and parts.lists is not None:
            tasks.append(asyncio.create_task(
                parts.state_watch.run(parts.lists.start), name="state-watch"
            ))  # fmt: skip
        self.ready.set()
        log.info("bot.ready", user_id=client.user_id, device_id=client.device_id)
        gc.freeze()  # what start-up built lives on: kept out of full collections
        # Work a previous run claimed but was stopped before finishing.
        await resume_unfinished(
            client, parts.ledger, parts.relay, parts.dispatcher.take_up,
            since=started - RESUME_WINDOW, before=started,
        )  # fmt: skip
        schedule_jobs(
            jobs, announcements=parts.announcements, moderation=parts.moderation,
            login_links=parts.login_links, welcome=parts.welcome,
            send_login_link=parts.welcomer.send_login_link,
            reminder_after=cfg.welcome.reminder_after or None, chat=parts.chat,
            retention_days=cfg.gpt.history_retention_days, ledger=parts.ledger,
            outbox=parts.outbox, announcement_poll_s=self._job_poll_s,
            identity_sync=parts.identity_sync,
        )  # fmt: skip
        if parts.chat.media is not None:  # images no turn took within an hour are forgotten
            jobs.every("media_pending", 3600, parts.chat.media.drop_stale_pending, first_after=600)
        jobs.start()
        keeper = [self._lease_keeper] if self._lease_keeper is not None else []
        await self._until_stopped(None, [*tasks, *keeper])

    async def _secure(self, client: AsyncClient, sync: SyncLoop) -> None:
        """The device cross-signed, room keys restored into a fresh data dir and backed up;
        begun once the device's keys are up (what it loads waits until then, not the first
        sync)."""
        await sync.keys_published()
        from bot.matrix.account_recovery import AccountRecovery

        cfg = self.config
        self.recovery = AccountRecovery(cfg.matrix.homeserver, client, cfg.data.dir,
                                        recovery_key=_secret(cfg.matrix.recovery_key))  # fmt: skip
        await self._cross_sign(client, self.recovery.restore_cross_signing)
        await self.recovery.secure()

    async def _close_recovery(self) -> None:
        if self.recovery is not None:
            await self.recovery.close()

    @staticmethod
    async def _display_name(client: AsyncClient) -> str | None:
        try:
            profile = await client.get_displayname(client.user_id)
        except CONNECT_ERRORS as problem:  # mentions by name wait for a restart; the rest works
            log.warning("matrix.displayname_unavailable", error=str(problem))
            return None
        return profile.displayname if isinstance(profile, ProfileGetDisplayNameResponse) else None

    async def _cross_sign(self, client: Any, restore: Restore | None = None) -> None:
        """Cross-sign the bot's device; trouble here is logged, the bot works on regardless."""
        from bot.matrix.cross_signing import CrossSigning, CrossSigningError

        cfg = self.config
        try:
            # Only device keys equal to our own Olm identity keys get signed, whatever the server says.
            signer = CrossSigning(cfg.matrix.homeserver, client.user_id, client.device_id,
                                  client.access_token, cfg.data.dir,
                                  identity_keys=client.olm.account.identity_keys)  # fmt: skip
            await signer.ensure(_secret(cfg.matrix.password), restore)
        except (CrossSigningError, *CONNECT_ERRORS) as problem:
            log.error("crypto.cross_signing_failed", error=str(problem))
        except Exception:  # e.g. a damaged key file: say so, keep serving with an unsigned device
            log.exception("crypto.cross_signing_failed")

    async def _until_stopped(
        self, awaited: asyncio.Task[Any] | None, watched: Sequence[asyncio.Task[Any]] = ()
    ) -> bool:
        """Wait for `awaited` (or forever) while a stop request or a failing background task ends it.
        True when `awaited` finished normally."""
        stopper = asyncio.create_task(self._stop.wait())
        waiting = {stopper, *watched} | ({awaited} if awaited else set())
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for task in done:
            if task in watched:
                task.result()  # a background task must never end: re-raise what killed it
                raise RuntimeError(f"{task.get_name()} loop ended unexpectedly")
        if awaited is not None and awaited in done:
            awaited.result()
            return True
        if awaited is not None:
            awaited.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await awaited
        return False


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _abandon(task: asyncio.Task[Any]) -> None:
    """Stop `task` if it still runs; what it raised was reported where it was awaited (or matters
    less than what ends the bot now)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
