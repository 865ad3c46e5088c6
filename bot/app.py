"""The composition root: the only module that knows every part. Builds the store, the domain, the
Matrix client and its loops, runs them in one event loop and shuts them down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from nio import ProfileGetDisplayNameResponse, RoomResolveAliasResponse

from bot.commands.catalog import all_commands
from bot.commands.executor import CommandExecutor
from bot.commands.services import LoginSettings, Services
from bot.community.announcements import Announcements
from bot.community.audit import AuditLog
from bot.community.chat import ChatService, ChatSettings
from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.community.members import MemberAdmin
from bot.community.moderation import Moderation
from bot.community.outbox import Outbox
from bot.community.roles import Role
from bot.community.tokens import warm_up
from bot.community.users import UserService
from bot.community.welcome import WelcomeService
from bot.config import Config
from bot.data_dir import make_private
from bot.errors import OperatorError
from bot.jobs import Jobs, schedule_jobs
from bot.llm.openai_compatible import OpenAICompatibleModel
from bot.matrix.chat_relay import ChatRelay
from bot.matrix.client import CONNECT_ERRORS, build_client, log_in
from bot.matrix.cross_signing import CrossSigning, CrossSigningError
from bot.matrix.direct import DirectMessenger
from bot.matrix.dispatch import Dispatcher
from bot.matrix.invites import InvitePolicy
from bot.matrix.outbox_courier import OutboxCourier
from bot.matrix.resume import resume_unfinished
from bot.matrix.room_actions import MatrixRoomActions
from bot.matrix.room_kinds import RoomKinds
from bot.matrix.sender import Sender
from bot.matrix.sync import SyncLoop
from bot.matrix.welcomer import Welcomer
from bot.store.database import Database
from bot.store.direct_rooms import DirectRooms
from bot.store.events import EventLedger
from bot.store.migrate import upgrade_to_head
from bot.store.models import utcnow
from web_callback.app import create_app, serve

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 10.0
RESUME_WINDOW = timedelta(hours=1)  # older unfinished work is left alone: the moment has passed
HANDLED_EVENTS_KEPT = timedelta(days=30)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_chat(
    cfg: Config, db: Database, *, identity: IdentityService, users: UserService
) -> ChatService:
    gpt = cfg.gpt
    default = gpt.daily_token_quota
    settings = ChatSettings(
        enabled=gpt.enabled,
        model=gpt.model,
        system_prompt=gpt.system_prompt,
        require_sso=gpt.require_sso,
        history_token_budget=gpt.history_token_budget,
        summarize=gpt.summarize,
        daily_quota={
            Role.USER: default,
            Role.MODERATOR: default
            if gpt.moderator_daily_token_quota is None
            else gpt.moderator_daily_token_quota,
            Role.ADMIN: default
            if gpt.admin_daily_token_quota is None
            else gpt.admin_daily_token_quota,
        },
        command_prefix=cfg.matrix.command_prefix,
        max_tokens=gpt.max_tokens,
    )
    model = OpenAICompatibleModel(
        base_url=gpt.base_url,
        api_key=_secret(gpt.api_key),
        temperature=gpt.temperature,
        timeout=gpt.timeout,
        max_retries=gpt.max_retries,
        stream=gpt.stream,
    )
    return ChatService(db, settings, model, identity=identity, users=users)


class BotApp:
    def __init__(
        self,
        config: Config,
        *,
        long_poll_ms: int | None = None,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        job_poll_s: float = 5.0,
    ) -> None:
        self.config = config
        self._job_poll_s = job_poll_s
        self.jobs: Jobs | None = None
        self._shutdown_grace_s = shutdown_grace_s
        make_private(config.data.dir)
        self.db = Database(config.database.url)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._long_poll_ms = long_poll_ms
        self.sender: Sender | None = None
        self.courier: OutboxCourier | None = None
        self.welcomer: Welcomer | None = None
        self.ledger: EventLedger | None = None
        self._warming: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self._stop.set()

    async def wait_ready(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def run(self) -> None:
        cfg = self.config
        try:
            before, after = await upgrade_to_head(self.db)
            if before != after:
                log.info(
                    "store.migrated",
                    from_revision=before,
                    to_revision=after,
                    backend=self.db.backend,
                )
            # Claims only matter while an event can still come back in a sync; keep a month.
            await EventLedger(self.db, cfg.matrix.user_id).forget_before(
                utcnow() - HANDLED_EVENTS_KEPT
            )
            # The web app serves even while the homeserver is unreachable.
            web = create_app(cfg, self.db, on_linked=self._outbox_waiting)
            runner = await serve(web, cfg.web.listen_host, cfg.web.listen_port)
            client = build_client(
                cfg.matrix.homeserver,
                cfg.matrix.user_id,
                cfg.data.dir,
                encryption=cfg.matrix.encryption,
            )
            try:
                await self._run_with_client(client)
            finally:
                await client.close()
                await runner.cleanup()
        finally:
            await self.db.close()
            log.info("bot.stopped")

    def _outbox_waiting(self) -> None:
        if self.courier is not None:
            self.courier.wake()

    async def _log_in(self, client: Any) -> None:
        m = self.config.matrix
        failures = 0
        while True:
            try:
                await log_in(
                    client,
                    data_dir=self.config.data.dir,
                    password=_secret(m.password),
                    access_token=_secret(m.access_token),
                    device_name=m.device_name,
                )
                return
            except (*CONNECT_ERRORS, ConnectionError) as problem:
                failures += 1
                wait = min(60, 2**failures)
                log.warning(
                    "matrix.unreachable",
                    homeserver=m.homeserver,
                    error=str(problem),
                    retry_in_s=wait,
                )
                await asyncio.sleep(wait)

    async def _resolve_admin_room(self, client: Any) -> str | None:
        room = self.config.matrix.admin_room
        if room is None or room.startswith("!"):
            return room
        for attempt in range(5):
            try:
                response = await client.room_resolve_alias(room)
                break
            except CONNECT_ERRORS as problem:
                log.warning(
                    "matrix.admin_room_unresolved",
                    room=room,
                    error=str(problem),
                    attempt=attempt + 1,
                )
                await asyncio.sleep(2 * (attempt + 1))
        else:
            raise OperatorError(
                f"matrix.admin_room {room} could not be resolved: the homeserver is not answering"
            )
        if not isinstance(response, RoomResolveAliasResponse):
            raise OperatorError(f"matrix.admin_room {room} does not resolve: {response.message}")
        return response.room_id

    async def _cross_sign(self, client: Any) -> None:
        """Cross-sign the bot's device; trouble here is logged, the bot works on regardless."""
        cfg = self.config
        try:
            # Only device keys equal to our own Olm identity keys get signed, whatever the server says.
            signer = CrossSigning(cfg.matrix.homeserver, client.user_id, client.device_id,
                                  client.access_token, cfg.data.dir,
                                  identity_keys=client.olm.account.identity_keys)  # fmt: skip
            await signer.ensure(_secret(cfg.matrix.password))
        except (CrossSigningError, *CONNECT_ERRORS) as problem:
            log.error("crypto.cross_signing_failed", error=str(problem))
        except Exception:  # e.g. a damaged key file: say so, keep serving with an unsigned device
            log.exception("crypto.cross_signing_failed")

    async def _resolve_rooms(self, client: Any, rooms: Sequence[str], what: str) -> list[str]:
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

    async def _run_with_client(self, client: Any) -> None:
        cfg = self.config
        started = utcnow()  # claims from before this moment belong to a previous run
        login = asyncio.create_task(self._log_in(client))
        if not await self._until_stopped(login):
            return
        me = client.user_id
        users = UserService(self.db, cfg.roles.admins)
        identity = IdentityService(self.db, cfg.roles.admins)
        chat = build_chat(cfg, self.db, identity=identity, users=users)
        warm_up(cfg.gpt.model)  # the tokenizer loads in the background, off the event loop
        if released := await chat.release_held_tokens():
            log.info("chat.reservations_released", members=released)
        login_links = LoginLinks(self.db, cfg.sso.link_ttl)
        login_settings = LoginSettings(
            public_url=cfg.web.public_url,
            link_ttl_minutes=cfg.sso.link_ttl // timedelta(minutes=1),
            providers={p.id: p.display_name for p in cfg.sso.providers},
        )
        self.sender = sender = Sender(client)
        direct = DirectMessenger(client, DirectRooms(self.db), encryption=cfg.matrix.encryption)
        outbox = Outbox(self.db)
        admin_room_id = await self._resolve_admin_room(client)
        kinds = RoomKinds(
            client,
            community_rooms=await self._resolve_rooms(
                client, cfg.matrix.community_rooms, "matrix.community_rooms"
            ),
            admin_room_id=admin_room_id,
        )
        room_actions = MatrixRoomActions(client, sender, direct, kinds)
        welcome = WelcomeService(
            self.db, identity,
            rooms=await self._resolve_rooms(client, cfg.welcome.rooms, "welcome.rooms"),
            template=cfg.welcome.message,
        )  # fmt: skip
        announcements = Announcements(
            self.db,
            cfg.scheduler.timezone,
            cfg.scheduler.missed_run_grace,
        )
        moderation = Moderation(self.db, room_actions, users, me, admin_room_id=admin_room_id)
        services = Services(
            users=users,
            audit=AuditLog(self.db),
            identity=identity,
            chat=chat,
            login_links=login_links,
            login=login_settings,
            members=MemberAdmin(self.db, cfg.roles.admins, me),
            moderation=moderation,
            welcome=welcome,
            announcements=announcements,
            bot_user_id=me,
        )
        executor = CommandExecutor(
            all_commands(),
            services,
            prefix=cfg.matrix.command_prefix,
            admin_room_id=admin_room_id,
        )
        welcomer = Welcomer(
            welcome, sender, room_name=room_actions.room_name, links=login_links, outbox=outbox,
            login=login_settings, batch_window_s=cfg.welcome.batch_window.total_seconds(),
            dm_unlinked=cfg.welcome.dm_unlinked, prefix=cfg.matrix.command_prefix,
        )  # fmt: skip
        self.welcomer = welcomer
        self.ledger = ledger = EventLedger(self.db, me)
        dispatcher = Dispatcher(
            client,
            ledger=ledger,
            executor=executor,
            sender=sender,
            direct=direct,
            invites=InvitePolicy(cfg.matrix.autojoin_from, cfg.roles.admins),
            prefix=cfg.matrix.command_prefix,
            relay=(relay := ChatRelay(chat, sender, stream=cfg.gpt.stream)),
            welcomer=welcomer,
        )
        try:
            profile = await client.get_displayname(me)
        except CONNECT_ERRORS as problem:  # mentions by name wait for a restart; the rest works
            log.warning("matrix.displayname_unavailable", error=str(problem))
        else:
            if isinstance(profile, ProfileGetDisplayNameResponse):
                dispatcher.display_name = profile.displayname
        sync = SyncLoop(
            client, ledger, dispatcher, encryption=cfg.matrix.encryption, trust=cfg.matrix.trust,
            **({"long_poll_ms": self._long_poll_ms} if self._long_poll_ms else {}),
        )  # fmt: skip
        self.courier = courier = OutboxCourier(
            outbox, sender, direct, compose_login_link=welcomer.compose_login_link
        )
        dispatcher.member_joined = courier.recipient_joined
        tasks = [asyncio.create_task(sync.run(), name="sync")]
        jobs = self.jobs = Jobs()
        try:
            if not await self._until_stopped(asyncio.create_task(sync.ready.wait()), tasks):
                return
            if cfg.matrix.encryption:  # the device's keys went up with the first sync
                await self._cross_sign(client)
            tasks.append(asyncio.create_task(self.courier.run(), name="outbox"))
            self.ready.set()
            log.info("bot.ready", user_id=me, device_id=client.device_id)
            self._warming = asyncio.create_task(self._warm_up(chat), name="warm-up")
            # Work a previous run claimed but was stopped before finishing.
            await resume_unfinished(
                client, ledger, relay, dispatcher.take_up,
                since=started - RESUME_WINDOW, before=started,
            )  # fmt: skip
            schedule_jobs(
                jobs, announcements=announcements, moderation=moderation, login_links=login_links,
                welcome=welcome, send_login_link=welcomer.send_login_link,
                reminder_after=cfg.welcome.reminder_after or None,
                chat=chat, retention_days=cfg.gpt.history_retention_days, ledger=ledger,
                outbox=outbox, announcement_poll_s=self._job_poll_s,
            )  # fmt: skip
            jobs.start()
            await self._until_stopped(None, tasks)
        finally:
            jobs.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await welcomer.flush()
            await dispatcher.drain(self._shutdown_grace_s)

    @staticmethod
    async def _warm_up(chat: ChatService) -> None:
        """Background: get the assistant ready for its first question. Then everything loaded
        so far (libraries, the wiring) is moved out of the garbage collector's sight: a full
        collection over it would otherwise stall the event loop for a fifth of a second now and
        then."""
        try:
            await chat.warm_up()
        except Exception as problem:  # a first question will try again, and say what is wrong
            log.warning("gpt.warm_up_failed", error=str(problem))
        gc.freeze()

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
