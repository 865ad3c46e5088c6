"""Turns what a sync brought into work: invites are accepted or refused, messages addressed to the
bot run as commands. Each event is claimed by id first, so nothing is answered twice."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import structlog
from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinError,
    MegolmEvent,
    RedactionEvent,
    RoomMemberEvent,
    RoomMessageText,
    SyncResponse,
)
from nio.exceptions import EncryptionError, LocalProtocolError
from sqlalchemy.exc import SQLAlchemyError

from bot.commands.executor import CommandExecutor, Message
from bot.commands.reply import Reply
from bot.community.chat import ChatTurn
from bot.lru import LRUDict
from bot.matrix.chat_relay import ChatRelay
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.direct import DirectMessenger
from bot.matrix.event_guard import EventGuard
from bot.matrix.invites import InvitePolicy
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError
from bot.matrix.triggers import find_trigger, resolve_pills
from bot.matrix.welcomer import Welcomer
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

KEY_WAIT_S = 10.0  # how long a missing room key may take to arrive before the sender is told
HELP_EVERY_S = 600.0  # at most one decryption help message per sender in this time
MEMO_SIZE = 10_000  # per-sender memos kept at most
INTERRUPTED_KEPT = timedelta(days=1)  # half answers older than the resume window still get tidied


def _thread_root(content: dict[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        return root if isinstance(root, str) else None
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
        relay: ChatRelay | None = None,
        welcomer: Welcomer | None = None,
    ) -> None:
        self._client = client
        self._relay = relay
        self._welcomer = welcomer
        self.key_wait_s = KEY_WAIT_S
        # sender -> when they last got the decryption help
        self._helped: LRUDict[str, float] = LRUDict(MEMO_SIZE)
        self._ledger = ledger
        self._guard = EventGuard(ledger)
        self._executor = executor
        self._sender = sender
        self._direct = direct
        self._invites = invites
        self._prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()
        self._room_queues: dict[str, collections.deque[Coroutine[Any, Any, None]]] = {}
        self._room_workers: set[str] = set()
        self.display_name: str | None = None
        # Told of every member who joins a DM with the bot (the outbox waits for those joins).
        self.member_joined: Callable[[str], Awaitable[None]] | None = None

    @property
    def bot_user_id(self) -> str:
        return self._client.user_id

    async def handle_sync(self, response: SyncResponse, *, backlog: bool) -> None:
        """`backlog` marks the first sync of a fresh start: its messages are history, not requests."""
        for room_id, info in response.rooms.invite.items():
            await self._guard.run(
                room_id, None,
                lambda retry, room_id=room_id, state=info.invite_state: self._on_invite(
                    room_id, state
                ),
            )  # fmt: skip
        if backlog:
            skipped = sum(len(i.timeline.events) for i in response.rooms.join.values())
            log.info("matrix.backlog_skipped", events=skipped)
            return
        for room_id, info in response.rooms.join.items():
            events = self._since_our_join(info.timeline.events)
            if info.timeline.limited and len(events) == len(info.timeline.events):
                # More happened than one sync carries (not the history of a room just joined).
                log.warning("matrix.timeline_gap", room_id=room_id, events=len(events))
            for event in events:
                if getattr(event, "sender", None) == self.bot_user_id:
                    continue
                await self._guard.run(
                    room_id, getattr(event, "event_id", None),
                    lambda retry, room_id=room_id, event=event: self._on_event(
                        room_id, event, retry=retry
                    ),
                )  # fmt: skip

    async def _on_event(self, room_id: str, event: Any, *, retry: bool) -> None:
        if isinstance(event, RoomMessageText):
            await self._on_text(room_id, event, resumed=retry)
        elif isinstance(event, RedactionEvent):
            await self._on_redaction(event)
        elif isinstance(event, RoomMemberEvent):
            await self._on_member(room_id, event)
        elif isinstance(event, MegolmEvent):
            await self._on_undecryptable(room_id, event)

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

    def _sender_name(self, room_id: str, sender: str) -> str | None:
        room = self._client.rooms.get(room_id)
        return room.user_name(sender) if room is not None else None

    async def _on_undecryptable(self, room_id: str, event: MegolmEvent) -> None:
        """A message nio could not decrypt: ask for the key, give it a moment, and if it does
        not come, tell the sender (in words they can read) what to do. Never leave the room."""
        if not await self._ledger.claim(event.event_id, room_id):
            return
        message = Message(
            sender=event.sender, room_id=room_id, event_id=event.event_id,
            is_direct=self._direct.is_direct(room_id, event.sender),
            origin_server_ts=event.server_timestamp,
        )  # fmt: skip
        self._spawn(self._finishing(message, self._recover(room_id, event, message)))

    async def _recover(self, room_id: str, event: MegolmEvent, message: Message) -> None:
        bound = log.bind(room_id=room_id, event_id=event.event_id)
        bound.warning("crypto.undecryptable", sender=event.sender, device_id=event.device_id,
                      session_id=event.session_id)  # fmt: skip
        try:
            await self._client.request_room_key(event)
        except LocalProtocolError:
            pass  # already asked for this session
        except CONNECT_ERRORS as problem:
            bound.warning("crypto.key_request_failed", error=str(problem))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.key_wait_s
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            try:
                decrypted = self._client.decrypt_event(event)
            except (EncryptionError, ValueError):
                continue
            if isinstance(decrypted, RoomMessageText):
                bound.info("crypto.decrypted_late")
                await self._on_text(room_id, decrypted, resumed=True)
            return
        # Help goes only where the message was surely meant for the bot (a DM), and not for every
        # message of someone whose app keeps failing: in rooms it would be noise, or a DM storm.
        now = loop.time()
        if (
            not message.is_direct
            or now - self._helped.get(event.sender, -HELP_EVERY_S) < HELP_EVERY_S
        ):
            bound.info("crypto.help_skipped", direct=message.is_direct)
            return
        self._helped[event.sender] = now
        p = self._prefix
        text = (
            "⚠️ I could not decrypt your message: your app did not share its encryption keys with "
            f"my session ({self._client.device_id}). Please send it again. If this keeps happening, "
            "make sure your app sends to unverified sessions, or verify my session; "
            f"`{p}help` works in any case."
        )
        try:
            await self._sender.send_plaintext(
                room_id, message_content(text, reply_to=event.event_id)
            )
        except Exception as problem:  # a help message that fails must not take anything down
            bound.error("crypto.help_not_sent", error=str(problem))

    async def _on_member(self, room_id: str, event: RoomMemberEvent) -> None:
        """A real join (not a profile change, not the bot) may be a newcomer to greet, or a
        member accepting the DM that messages wait for."""
        if (
            event.membership != "join"
            or event.prev_membership == "join"
            or event.state_key == self.bot_user_id
        ):
            return
        if self.member_joined is not None and self._direct.is_direct(room_id, event.state_key):
            await self.member_joined(event.state_key)
        if self._welcomer is None:
            return
        name = event.content.get("displayname")
        await self._welcomer.on_join(
            room_id, event.state_key, name if isinstance(name, str) else None
        )

    async def _on_redaction(self, event: RedactionEvent) -> None:
        if self._relay is not None and event.redacts:
            if await self._relay.chat.forget_event(event.redacts):
                log.info("chat.redacted", event_id=event.redacts)

    async def _on_edit(self, content: dict[str, Any], editor: str) -> None:
        if self._relay is None:
            return
        relates, new = content.get("m.relates_to"), content.get("m.new_content")
        if not isinstance(relates, dict) or not isinstance(new, dict):
            return
        target, new_body = relates.get("event_id"), new.get("body")
        if isinstance(target, str) and isinstance(new_body, str):
            await self._relay.chat.edit_event(target, new_body, editor)

    async def _on_text(
        self, room_id: str, event: RoomMessageText, *, resumed: bool = False
    ) -> None:
        content = event.source.get("content", {})
        if _is_edit(content):
            await self._on_edit(content, event.sender)
            return
        is_direct = self._direct.is_direct(room_id, event.sender)
        thread_root = _thread_root(content)  # replies go to the thread they were asked in
        trigger = find_trigger(
            content,
            prefix=self._prefix,
            bot_user_id=self.bot_user_id,
            bot_display_name=self.display_name,
        )
        command: str | None = None
        chat: str | None = None
        if trigger is not None:
            first_word = trigger.text.split(maxsplit=1)[0] if trigger.text.strip() else ""
            if trigger.prefixed or self._executor.knows(first_word):
                command = trigger.text
            elif self._relay is not None:
                chat = trigger.text if trigger.text.strip() else None
        if command is None and chat is None and self._relay is not None:
            # DMs need no prefix; in rooms, a thread the assistant is part of continues.
            if is_direct or (
                thread_root is not None
                and await self._relay.chat.has_conversation(room_id, thread_root)
            ):
                chat = event.body
        if command is None and chat is None:
            return
        if not resumed and not await self._ledger.claim(event.event_id, room_id):
            log.info("matrix.duplicate_skipped", room_id=room_id, event_id=event.event_id)
            return
        message = Message(
            sender=event.sender,
            room_id=room_id,
            event_id=event.event_id,
            is_direct=is_direct,
            origin_server_ts=event.server_timestamp,
            thread_root=thread_root,
        )
        if command is not None:
            command = resolve_pills(command, content)
            # Commands of one room run one after another, so replies come in command order.
            self._queue_in_room(
                room_id, self._finishing(message, self._run_command(command, message))
            )
        else:
            # Chat turns take long; they run beside the commands (ordered per conversation).
            self._spawn(self._finishing(message, self._run_chat(chat or "", message)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _queue_in_room(self, room_id: str, work: Coroutine[Any, Any, None]) -> None:
        queue = self._room_queues.setdefault(room_id, collections.deque())
        queue.append(work)
        if room_id not in self._room_workers:
            self._room_workers.add(room_id)
            self._spawn(self._work_through(room_id))

    async def _work_through(self, room_id: str) -> None:
        queue = self._room_queues[room_id]
        try:
            while queue:
                await queue.popleft()
        finally:
            self._room_workers.discard(room_id)
            for leftover in queue:  # cancelled at shutdown: their claims stay unfinished
                leftover.close()
            self._room_queues.pop(room_id, None)

    async def _finishing(self, message: Message, work: Coroutine[Any, Any, bool | None]) -> None:
        """Run the handler; record the event as finished unless shutdown cut it off, or the
        handler handed the event on (False: an answer still streaming finishes it)."""
        if await work is False:
            return
        try:
            await self._ledger.finish(message.event_id)
        except SQLAlchemyError:
            log.warning("matrix.finish_not_recorded", event_id=message.event_id)

    async def resume_unfinished(self, since: datetime, before: datetime) -> int:
        """After a restart: take up commands and questions a previous run claimed between
        `since` and `before` (this run's start) but never finished. An answer a previous run
        left half-written is never left so: it is finished, or replaced by a notice."""
        resumed = 0
        for claim in await self._ledger.unfinished(since - INTERRUPTED_KEPT, before):
            room_id, event_id = claim.room_id, claim.event_id
            bound = log.bind(room_id=room_id, event_id=event_id)
            try:
                if claim.handled_at < since:  # too late to answer now: just tidy up
                    await self._tidy_interrupted(claim.room_id, claim.reply_event_id)
                else:
                    event = await self._fetch(room_id, event_id)
                    if isinstance(event, RoomMessageText):
                        await self._on_text(room_id, event, resumed=True)
                        resumed += 1
                        bound.info("matrix.resumed")
                        continue
                    bound.warning("matrix.resume_skipped", reason=type(event).__name__)
                    await self._tidy_interrupted(claim.room_id, claim.reply_event_id)
            except Exception as problem:
                bound.warning("matrix.resume_failed", error=str(problem))
            await self._ledger.finish(event_id)
        return resumed

    async def _fetch(self, room_id: str, event_id: str) -> Any:
        response = await self._client.room_get_event(room_id, event_id)
        event = getattr(response, "event", None)
        if isinstance(event, MegolmEvent):
            event = self._client.decrypt_event(event)
        return event if event is not None else response

    async def _tidy_interrupted(self, room_id: str, placeholder: str | None) -> None:
        if placeholder is not None and self._relay is not None:
            await self._relay.interrupted(room_id, placeholder)

    def _chat_turn(self, text: str, message: Message) -> ChatTurn:
        return ChatTurn(
            room_id=message.room_id,
            # In a room the answer opens a thread on the question (or continues the thread).
            thread_root=None if message.is_direct else (message.thread_root or message.event_id),
            sender=message.sender,
            sender_name=None
            if message.is_direct
            else self._sender_name(message.room_id, message.sender),
            text=text,
            event_id=message.event_id,
        )

    async def _run_chat(self, text: str, message: Message) -> None:
        assert self._relay is not None
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        event_id = message.event_id

        async def remember(placeholder: str) -> None:
            await self._ledger.set_reply(event_id, placeholder)

        try:
            await self._relay.answer(
                self._chat_turn(text, message),
                reply_to=None if message.is_direct else event_id,
                placeholder=await self._ledger.reply_of(event_id),
                on_placeholder=remember,
            )
        except Exception:
            log.exception("chat.failed", sender=message.sender)

    async def _run_command(self, text: str, message: Message) -> bool:
        """Run a command and deliver its reply. False when the event is not finished yet: an
        `!ask` answer goes on streaming beside the room's next commands, and finishes it."""
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        started = time.monotonic()
        name = text.split(maxsplit=1)[0].lower()[:64] if text.strip() else ""
        try:
            reply = await self._executor.run(text, message)
        except Exception:
            log.exception("command.failed", command=name, sender=message.sender)
            reply = Reply.error(
                "Something went wrong while running that command. It has been logged."
            )
        if reply.chat_prompt is not None and self._relay is not None:
            # The answer streams for a while: let the room's next command go meanwhile.
            self._spawn(self._finishing(message, self._run_chat(reply.chat_prompt, message)))
            log.info("command.handled", command=name, sender=message.sender)
            return False
        try:
            await self.deliver(reply, message, message.thread_root)
        except SendError as problem:
            log.error("command.reply_failed", command=name, error=str(problem))
            await self._tell_undelivered(message, problem)
            return True
        log.info(
            "command.handled",
            command=name,
            sender=message.sender,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return True

    async def _tell_undelivered(self, message: Message, problem: SendError) -> None:
        """The reply could not go out (too large, refused): say so in a few words instead."""
        notice = message_content(
            f"⚠️ I could not deliver my answer to this: {problem}.",
            reply_to=message.event_id,
            thread_root=message.thread_root,
        )
        try:
            await self._sender.send(message.room_id, notice)
        except SendError as again:
            log.error("command.notice_failed", error=str(again))

    async def deliver(self, reply: Reply, message: Message, thread_root: str | None) -> None:
        async def in_place(room_id: str, markdown: str) -> None:
            await self._sender.send_markdown(
                room_id,
                markdown,
                mentions=reply.mentions,
                reply_to=message.event_id,
                thread_root=thread_root,
            )

        if reply.direct_markdown is not None:
            # Private answers (login links) only ever go to a DM, and go there first.
            try:
                dm_room = await self._direct.room_for(message.sender, current=message.room_id)
            except Exception:
                log.exception("matrix.dm_failed", user_id=message.sender)
                await in_place(
                    message.room_id,
                    "⚠️ I could not open a direct chat with you. Start one with me and try again.",
                )
                return
            if dm_room == message.room_id:
                await in_place(dm_room, reply.direct_markdown)
                return
            await self._sender.send_markdown(dm_room, reply.direct_markdown)
        await in_place(message.room_id, reply.markdown)
