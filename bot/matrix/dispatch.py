"""Turns what a sync brought into work: invites are accepted or refused, messages addressed to the
bot run as commands. Each event is claimed by id first, so nothing is answered twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinError,
    RoomMemberEvent,
    RoomMessageText,
    SyncResponse,
)

from bot.commands.executor import CommandExecutor, Message
from bot.commands.reply import Reply
from bot.matrix.direct import DirectMessenger
from bot.matrix.invites import InvitePolicy
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError
from bot.matrix.triggers import find_trigger
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)


def _thread_root(content: dict[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        return relates.get("event_id")
    return None


def _is_edit(content: dict[str, Any]) -> bool:
    relates = content.get("m.relates_to")
    return isinstance(relates, dict) and relates.get("rel_type") == "m.replace"


class Dispatcher:
    def __init__(
        self,
        client: AsyncClient,
        *,
        ledger: EventLedger,
        executor: CommandExecutor,
        sender: Sender,
        direct: DirectMessenger,
        invites: InvitePolicy,
        prefix: str,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._executor = executor
        self._sender = sender
        self._direct = direct
        self._invites = invites
        self._prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()
        self.display_name: str | None = None

    @property
    def bot_user_id(self) -> str:
        return self._client.user_id

    async def handle_sync(self, response: SyncResponse, *, backlog: bool) -> None:
        """`backlog` marks the first sync of a fresh start: its messages are history, not requests."""
        for room_id, info in response.rooms.invite.items():
            await self._on_invite(room_id, info.invite_state)
        if backlog:
            skipped = sum(len(i.timeline.events) for i in response.rooms.join.values())
            log.info("matrix.backlog_skipped", events=skipped)
            return
        for room_id, info in response.rooms.join.items():
            for event in self._since_our_join(info.timeline.events):
                if getattr(event, "sender", None) == self.bot_user_id:
                    continue
                if isinstance(event, RoomMessageText):
                    await self._on_text(room_id, event)

    def _since_our_join(self, events: list[Any]) -> list[Any]:
        """A room the bot has just joined arrives with its recent history: that is not for us."""
        for index in range(len(events) - 1, -1, -1):
            event = events[index]
            if (
                isinstance(event, RoomMemberEvent)
                and event.state_key == self.bot_user_id
                and event.membership == "join"
                and event.prev_membership != "join"
            ):
                return events[index + 1 :]
        return events

    async def drain(self, timeout: float) -> None:
        """Let handlers that are running finish (on shutdown), up to `timeout` seconds."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()

    # Invites

    async def _on_invite(self, room_id: str, invite_state: list[Any]) -> None:
        invite = next(
            (
                e
                for e in invite_state
                if isinstance(e, InviteMemberEvent)
                and e.state_key == self.bot_user_id
                and e.membership == "invite"
            ),
            None,
        )
        if invite is None:
            return
        inviter = invite.sender
        bound = log.bind(room_id=room_id, inviter=inviter)
        if not self._invites.allows(inviter):
            bound.info("matrix.invite_refused", reason="inviter not in matrix.autojoin_from")
            await self._client.room_leave(room_id)
            return
        response = await self._client.join(room_id)
        if isinstance(response, JoinError):
            bound.warning("matrix.join_failed", error=response.message)
            return
        bound.info("matrix.joined")
        if invite.content.get("is_direct"):
            await self._direct.remember(inviter, room_id)

    # Messages

    async def _on_text(self, room_id: str, event: RoomMessageText) -> None:
        content = event.source.get("content", {})
        if _is_edit(content):
            return
        trigger = find_trigger(
            content,
            prefix=self._prefix,
            bot_user_id=self.bot_user_id,
            bot_display_name=self.display_name,
        )
        if trigger is None:
            return
        if not trigger.prefixed:
            first_word = trigger.text.split(maxsplit=1)[0] if trigger.text.strip() else ""
            if not self._executor.knows(first_word):
                # A mention that is not a command: later features (the GPT relay) take it.
                trigger = None
        if trigger is None:
            return
        if not await self._ledger.claim(event.event_id, room_id):
            log.info("matrix.duplicate_skipped", room_id=room_id, event_id=event.event_id)
            return
        message = Message(
            sender=event.sender,
            room_id=room_id,
            event_id=event.event_id,
            is_direct=self._direct.is_direct(room_id),
            origin_server_ts=event.server_timestamp,
        )
        task = asyncio.create_task(self._run_command(trigger.text, message, _thread_root(content)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, text: str, message: Message, thread_root: str | None) -> None:
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        started = time.monotonic()
        name = text.split(maxsplit=1)[0].lower() if text.strip() else ""
        try:
            reply = await self._executor.run(text, message)
        except Exception:
            log.exception("command.failed", command=name, sender=message.sender)
            reply = Reply.error(
                "Something went wrong while running that command. It has been logged."
            )
        try:
            await self.deliver(reply, message, thread_root)
        except SendError as problem:
            log.error("command.reply_failed", command=name, error=str(problem))
            return
        log.info(
            "command.handled",
            command=name,
            sender=message.sender,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def deliver(self, reply: Reply, message: Message, thread_root: str | None) -> None:
        content = message_content(
            reply.markdown,
            mentions=reply.mentions,
            reply_to=message.event_id,
            thread_root=thread_root,
        )
        await self._sender.send(message.room_id, content)
        if reply.direct_markdown is not None:
            dm_room = await self._direct.room_for(message.sender)
            await self._sender.send(dm_room, message_content(reply.direct_markdown))
