"""Running a member's command line and delivering what it answered: in the room it was asked in (as
a reply, in its thread), and what is private (a login link) only in a DM with the caller, first. A
reply that cannot be delivered is replaced by a short notice that says why: never silence."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import structlog

from bot.commands.executor import CommandExecutor, Message
from bot.commands.reply import Reply
from bot.matrix.direct import DirectMessenger
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError
from bot.metrics import FAILED, NO_METRICS, OK, REJECTED, UNDELIVERED, Metrics

log = structlog.get_logger(__name__)


class ImageSink(Protocol):
    async def __call__(
        self,
        room_id: str,
        picture: Any,
        *,
        reply_to: str | None,
        thread_root: str | None,
        txn_id: str | None = None,
    ) -> str: ...


_ERROR_MARK = Reply.error("").markdown  # how every refusal begins


class CommandRunner:
    def __init__(self, executor: CommandExecutor, sender: Sender, direct: DirectMessenger) -> None:
        self._executor = executor
        self._sender = sender
        self._direct = direct
        self.metrics: Metrics = NO_METRICS
        # Sends a picture a command made (`!image`, Reply.extra["image"]); None: not offered.
        self.send_image: ImageSink | None = None

    async def run(self, text: str, message: Message) -> str | Coroutine[Any, Any, None] | None:
        """Run `text` (without its prefix) and deliver the reply. Returns the question when the
        command asks the assistant (`!ask`): that answer is the caller's to run; or, for a reply
        that takes long (`Reply.later`), the work that makes and delivers it, for the caller to
        run beside the room's next commands."""
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        started = time.monotonic()
        name = text.split(maxsplit=1)[0].lower()[:64] if text.strip() else ""
        known = self._executor.registry.resolve(name)
        counted = known.name if known is not None else "unknown"  # member text is no label
        reply, outcome = await self._answer(name, lambda: self._executor.run(text, message))
        if reply.chat_prompt is not None:
            log.info("command.handled", command=name, sender=message.sender)
            self.metrics.command_handled(counted, outcome, time.monotonic() - started)
            return reply.chat_prompt
        if reply.later is not None:
            return self._deliver_later(reply.later, message, name, counted, started)
        await self._deliver_counted(reply, outcome, message, name, counted, started)
        return None

    async def _answer(self, name: str, make: Callable[[], Awaitable[Reply]]) -> tuple[Reply, str]:
        try:
            reply = await make()
        except Exception:
            log.exception("command.failed", command=name)
            return Reply.error(
                "Something went wrong while running that command. It has been logged."
            ), FAILED
        # Refused: unknown, not allowed, bad arguments, refused by the domain.
        return reply, REJECTED if reply.markdown.startswith(_ERROR_MARK) else OK

    async def _deliver_later(
        self, later: Callable[[], Awaitable[Reply]], message: Message, name: str, counted: str,
        started: float,
    ) -> None:  # fmt: skip
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        reply, outcome = await self._answer(name, later)
        if reply.later is not None or reply.chat_prompt is not None:  # one step only
            reply, outcome = Reply.error("That command did not finish. It has been logged."), FAILED
            log.error("command.later_nested", command=name)
        await self._deliver_counted(reply, outcome, message, name, counted, started)

    async def _deliver_counted(
        self, reply: Reply, outcome: str, message: Message, name: str, counted: str,
        started: float,
    ) -> None:  # fmt: skip
        try:
            await self.deliver(reply, message)
        except SendError as problem:
            log.error("command.reply_failed", command=name, error=str(problem))
            await self.tell_undelivered(message, problem)
            self.metrics.command_handled(counted, UNDELIVERED, time.monotonic() - started)
            return
        self.metrics.command_handled(counted, outcome, time.monotonic() - started)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("command.handled", command=name, sender=message.sender, duration_ms=duration_ms)

    async def deliver(self, reply: Reply, message: Message) -> None:
        """Raises SendError when the reply could not go out. Each reply has transaction ids made
        from the command's event id: when a command is run again (taken up after a crash, or by
        the standby that took over) the homeserver keeps only the first of its replies."""
        txn = "reply-" + hashlib.sha256(message.event_id.encode()).hexdigest()[:32]
        picture = reply.extra.get("image")
        if picture is not None and self.send_image is not None:
            await self.send_image(
                message.room_id, picture, reply_to=message.event_id,
                thread_root=message.thread_root, txn_id=txn,
            )  # fmt: skip
            return

        async def in_place(room_id: str, markdown: str, txn_id: str = txn) -> None:
            await self._sender.send_markdown(
                room_id, markdown, mentions=reply.mentions, reply_to=message.event_id,
                thread_root=message.thread_root
                or (message.event_id if reply.in_thread and not message.is_direct else None),
                txn_id=txn_id,
            )  # fmt: skip

        if reply.direct_markdown is not None:
            try:
                dm_room = await self._direct.room_for(message.sender, current=message.room_id)
            except Exception:
                log.exception("matrix.dm_failed", user_id=message.sender)
                await in_place(
                    message.room_id,
                    "⚠️ I could not open a direct chat with you. Start one with me and try again.",
                    f"{txn}-nodm",
                )
                return
            if dm_room == message.room_id:
                await in_place(dm_room, reply.direct_markdown)
                return
            await self._sender.send_markdown(dm_room, reply.direct_markdown, txn_id=f"{txn}-dm")
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
