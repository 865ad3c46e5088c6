"""Turns what a sync brought into work. Each event passes the guard (one event never stops the
others), the router decides what it is (router.py), and the dispatcher acts: invites answered,
commands run in order per room (the room's order is a keyed lock, as Synapse's Linearizer),
assistant turns beside them, undecryptable messages to key recovery. Events are claimed by id
first, so nothing is answered twice; work a restart cut off is taken up again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from nio import (
    AsyncClient,
    MegolmEvent,
    RedactionEvent,
    RoomEncryptedMedia,
    RoomMemberEvent,
    RoomMessageMedia,
    RoomMessageText,
    SyncResponse,
)
from sqlalchemy.exc import SQLAlchemyError

from bot.commands.executor import CommandExecutor, Message
from bot.keyed_lock import KeyedLock
from bot.matrix import router
from bot.matrix.chat_relay import NOTICE_TIMEOUT_S, ChatRelay
from bot.matrix.command_runner import CommandRunner, ImageSink
from bot.matrix.direct import DirectMessenger
from bot.matrix.event_guard import EventGuard
from bot.matrix.invites import InvitePolicy, answer_invite
from bot.matrix.key_recovery import KeyRecovery
from bot.matrix.media_relay import MediaRelay
from bot.matrix.protection_stage import ProtectionStage
from bot.matrix.router import Chat, Command, Edit, ThreadFollowUp
from bot.matrix.sender import Sender
from bot.matrix.welcomer import Welcomer
from bot.metrics import Metrics
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(
        self, client: AsyncClient, *, ledger: EventLedger, executor: CommandExecutor,
        sender: Sender, direct: DirectMessenger, invites: InvitePolicy, prefix: str,
        relay: ChatRelay | None = None, welcomer: Welcomer | None = None,
    ) -> None:  # fmt: skip
        self._client, self._ledger, self._executor = client, ledger, executor
        self._direct, self._invites, self._prefix = direct, invites, prefix
        self._relay, self._welcomer = relay, welcomer
        self._guard = EventGuard(ledger)
        self._commands = CommandRunner(executor, sender, direct)
        self.keys = KeyRecovery(client, sender, prefix=prefix)
        self._room_order: KeyedLock[str] = KeyedLock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.display_name: str | None = None
        self._naming: asyncio.Task[str | None] | None = None  # the profile, asked at start
        # Told of every member who joins a DM with the bot (the outbox waits for those joins).
        self.member_joined: Callable[[str], Awaitable[None]] | None = None
        # Members' images and voice messages for the assistant; None: not handled.
        self.media: MediaRelay | None = None
        # Between the router and the handlers (bot/matrix/protection_stage.py); None: off.
        self.protections: ProtectionStage | None = None
        # Shown every sync after the first (state_watch.py); they must not block.
        self.sync_watchers: list[Callable[[SyncResponse], None]] = []

    def learn_display_name(self, profile: Awaitable[str | None]) -> None:
        """The bot's display name (for mentions by name), asked beside the first sync."""
        self._naming = asyncio.ensure_future(profile)

    @property
    def metrics(self) -> Metrics:
        return self._commands.metrics

    @metrics.setter
    def metrics(self, metrics: Metrics) -> None:
        self._commands.metrics = metrics

    @property
    def bot_user_id(self) -> str:
        return self._client.user_id

    async def handle_sync(self, response: SyncResponse, *, backlog: bool) -> None:
        """`backlog` marks the first sync of a fresh start: its messages are history, not requests."""
        for room_id, info in response.rooms.invite.items():
            await self._guard.run(room_id, None, lambda retry, r=room_id, s=info.invite_state: (
                answer_invite(self._client, self._invites, r, s, self._direct.remember)
            ))  # fmt: skip
        if backlog:
            skipped = sum(len(i.timeline.events) for i in response.rooms.join.values())
            log.info("matrix.backlog_skipped", events=skipped)
            return
        if self._naming is not None:  # mentions by name are known before the first message
            naming, self._naming = self._naming, None
            self.display_name = await naming
        for watcher in self.sync_watchers:
            watcher(response)
        handled = 0
        for room_id, info in response.rooms.join.items():
            events = router.since_join(info.timeline.events, self.bot_user_id)
            if info.timeline.limited and len(events) == len(info.timeline.events):
                # More happened than one sync carries (not the history of a room just joined).
                log.warning("matrix.timeline_gap", room_id=room_id, events=len(events))
            for event in events:
                if getattr(event, "sender", None) != self.bot_user_id:
                    handled += 1
                    await self._guard.run(room_id, getattr(event, "event_id", None), (
                        lambda retry, r=room_id, e=event: self._on_event(r, e, resumed=retry)
                    ))  # fmt: skip
        self.metrics.events_handled(handled)

    async def _on_event(self, room_id: str, event: Any, *, resumed: bool) -> None:
        # The protections stage: every event of a community room passes it before the handlers.
        if self.protections is not None and not await self.protections.screen(room_id, event):
            return
        if isinstance(event, RoomMessageText):
            await self._on_text(room_id, event, resumed=resumed)
        elif isinstance(event, RedactionEvent):
            if self._relay is not None and event.redacts:
                if await self._relay.chat.forget_event(event.redacts):
                    log.info("chat.redacted", event_id=event.redacts)
        elif isinstance(event, RoomMemberEvent):
            await self._on_member(room_id, event)
        elif self.media is not None and isinstance(event, RoomMessageMedia | RoomEncryptedMedia):
            # An image or voice message for the assistant (media_relay.py decides and claims).
            message = self._message(room_id, event, resumed=resumed)
            work = await self.media.take(event.source.get("content", {}), message)
            if work is not None:
                self._spawn(self._finishing(message, work))
        elif isinstance(event, MegolmEvent) and await self._ledger.claim(event.event_id, room_id):
            message = self._message(room_id, event)
            self._spawn(self._finishing(message, self.keys.recover(
                room_id, event, is_direct=message.is_direct, decrypted=self.take_up,
            )))  # fmt: skip

    def use_media(self, media: MediaRelay, send_image: ImageSink) -> None:
        """Members' images and voice messages go to `media`; pictures commands made are sent
        with `send_image`."""
        self.media = media
        self._commands.send_image = send_image

    async def take_up(self, room_id: str, event: RoomMessageText | RoomEncryptedMedia) -> None:
        """Handle a message again (decrypted late, or left unfinished by a previous run)."""
        if isinstance(event, RoomEncryptedMedia):  # an image or voice message decrypted late
            if self.media is not None:
                message = self._message(room_id, event, resumed=True)
                work = await self.media.take(event.source.get("content", {}), message)
                if work is not None:
                    await work
            return
        await self._on_text(room_id, event, resumed=True)

    async def _on_member(self, room_id: str, event: RoomMemberEvent) -> None:
        """An arrival may be a newcomer to greet, or a member accepting a DM messages wait for."""
        mxid = event.state_key
        if not router.is_arrival(event, self.bot_user_id):
            return
        if self.member_joined is not None and self._direct.is_direct(room_id, mxid):
            await self.member_joined(mxid)
        if self._welcomer is not None:
            name = event.content.get("displayname")
            await self._welcomer.on_join(room_id, mxid, name if isinstance(name, str) else None)

    def _message(self, room_id: str, event: Any, *, resumed: bool = False) -> Message:
        content = event.source.get("content", {})
        return Message(
            sender=event.sender, room_id=room_id, event_id=event.event_id,
            is_direct=self._direct.is_direct(room_id, event.sender),
            origin_server_ts=event.server_timestamp,
            thread_root=router.thread_root(content) if isinstance(content, dict) else None,
            resumed=resumed,
        )  # fmt: skip

    async def _on_text(self, room_id: str, event: RoomMessageText, *, resumed: bool) -> None:
        message = self._message(room_id, event, resumed=resumed)
        decided = router.route(
            event.source.get("content", {}), prefix=self._prefix, bot_user_id=self.bot_user_id,
            bot_display_name=self.display_name, is_direct=message.is_direct,
            is_command=self._executor.knows, assistant=self._relay is not None,
        )  # fmt: skip
        if isinstance(decided, Edit):
            assert self._relay is not None
            await self._relay.chat.edit_event(decided.target, decided.new_body, event.sender)
            return
        if isinstance(decided, ThreadFollowUp):
            assert self._relay is not None
            if not await self._relay.chat.has_conversation(room_id, decided.thread_root):
                return
        if not isinstance(decided, Command | Chat | ThreadFollowUp):
            return
        if not resumed and not await self._ledger.claim(event.event_id, room_id):
            log.info("matrix.duplicate_skipped", room_id=room_id, event_id=event.event_id)
            return
        if isinstance(decided, Command):
            # Commands of one room run one after another, so replies come in command order.
            self._spawn(self._in_room_order(room_id, self._finishing(
                message, self._run_command(decided.text, message)
            )))  # fmt: skip
        else:  # chat turns take long; they run beside the commands (ordered per conversation)
            self._spawn(self._finishing(message, self._run_chat(decided.text, message)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_room_order(self, room_id: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._room_order(room_id):
                await work
        except asyncio.CancelledError:
            work.close()  # cut off at shutdown: its claim stays unfinished, for the next run
            raise

    async def _finishing(self, message: Message, work: Coroutine[Any, Any, bool | None]) -> None:
        """Run the handler; record the event as finished unless shutdown cut it off, or the
        handler handed the event on (False: an answer still streaming finishes it)."""
        if await work is False:
            return
        try:
            await self._ledger.finish(message.event_id)
        except SQLAlchemyError:
            log.warning("matrix.finish_not_recorded", event_id=message.event_id)

    async def drain(self, timeout: float, tidy_s: float = NOTICE_TIMEOUT_S + 1) -> None:
        """Let handlers that are running finish (on shutdown), up to `timeout` seconds; those cut
        off then get `tidy_s` to leave a notice in place of a half answer, before the client and
        the database close."""
        if self._naming is not None:
            self._naming.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=tidy_s)

    async def _run_chat(self, text: str, message: Message) -> None:
        assert self._relay is not None
        room = self._client.rooms.get(message.room_id)
        name = None if message.is_direct or room is None else room.user_name(message.sender)
        await self._relay.answer_message(message, text, sender_name=name, ledger=self._ledger)

    async def _run_command(self, text: str, message: Message) -> bool:
        """False when the event is not finished yet: an `!ask` answer goes on streaming beside
        the room's next commands, and finishes it (so does a reply that takes long)."""
        outcome = await self._commands.run(text, message)
        if outcome is None:
            return True
        if not isinstance(outcome, str):  # a reply that takes long: made beside the next commands
            self._spawn(self._finishing(message, outcome))
            return False
        if self._relay is None:
            return True
        self._spawn(self._finishing(message, self._run_chat(outcome, message)))
        return False
