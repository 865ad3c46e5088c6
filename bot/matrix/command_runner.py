"""Running a member's command line and delivering what it answered: in the room it was asked in (as
a reply, in its thread), and what is private (a login link) only in a DM with the caller, first. A
reply that cannot be delivered is replaced by a short notice that says why: never silence."""

from __future__ import annotations

import time

import structlog

from bot.commands.executor import CommandExecutor, Message
from bot.commands.reply import Reply
from bot.matrix.direct import DirectMessenger
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError

log = structlog.get_logger(__name__)


class CommandRunner:
    def __init__(self, executor: CommandExecutor, sender: Sender, direct: DirectMessenger) -> None:
        self._executor = executor
        self._sender = sender
        self._direct = direct

    async def run(self, text: str, message: Message) -> str | None:
        """Run `text` (without its prefix) and deliver the reply. Returns the question when the
        command asks the assistant (`!ask`): that answer is the caller's to run."""
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
        if reply.chat_prompt is not None:
            log.info("command.handled", command=name, sender=message.sender)
            return reply.chat_prompt
        try:
            await self.deliver(reply, message)
        except SendError as problem:
            log.error("command.reply_failed", command=name, error=str(problem))
            await self.tell_undelivered(message, problem)
            return None
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("command.handled", command=name, sender=message.sender, duration_ms=duration_ms)
        return None

    async def deliver(self, reply: Reply, message: Message) -> None:
        """Raises SendError when the reply could not go out."""

        async def in_place(room_id: str, markdown: str) -> None:
            await self._sender.send_markdown(
                room_id, markdown, mentions=reply.mentions, reply_to=message.event_id,
                thread_root=message.thread_root,
            )  # fmt: skip

        if reply.direct_markdown is not None:
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

    async def tell_undelivered(self, message: Message, problem: SendError) -> None:
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
