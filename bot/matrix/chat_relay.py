"""Relaying a chat turn to Matrix: typing, a short placeholder edited as the answer streams in
(at an interval rising from 0.5 s to 3 s, so the homeserver is not flooded), and a final edit
with the whole answer rendered. A failed turn leaves an error message, never half an answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from bot.community.chat import (
    ChatRefused,
    ChatService,
    ChatTurn,
    Completion,
    ModelError,
    PreparedTurn,
)
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError

log = structlog.get_logger(__name__)

PLACEHOLDER = "…"
FIRST_EDIT_INTERVAL_S = 0.5
MAX_EDIT_INTERVAL_S = 3.0
INTERVAL_GROWTH = 1.5


class EditPacer:
    """Edits a message with the latest text, no more often than the (rising) interval allows."""

    def __init__(
        self, sender: Sender, room_id: str, placeholder: asyncio.Future[str] | str
    ) -> None:
        self._sender = sender
        self._room_id = room_id
        self._placeholder = placeholder  # the event to edit, or its send still under way
        self._latest = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()
        self.edits = 0
        self._task = asyncio.create_task(self._run())

    def update(self, text: str) -> None:
        self._latest = text
        self._changed.set()

    async def _run(self) -> None:
        try:
            event_id = (
                await self._placeholder
                if isinstance(self._placeholder, asyncio.Future)
                else self._placeholder
            )
        except SendError:
            return  # no placeholder, nothing to edit: the relay reports the failure
        interval = FIRST_EDIT_INTERVAL_S
        while not self._finished.is_set():
            await self._changed.wait()
            self._changed.clear()
            if self._finished.is_set():
                break
            if self._latest != self._shown:
                self._shown = self._latest
                try:
                    await self._sender.edit(
                        self._room_id,
                        event_id,
                        message_content(f"{self._shown} {PLACEHOLDER}"),
                    )
                    self.edits += 1
                except SendError as problem:
                    log.warning("chat.stream_edit_failed", error=str(problem))
            # Wait out the interval, unless the answer is complete meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), interval)
            interval = min(MAX_EDIT_INTERVAL_S, interval * INTERVAL_GROWTH)

    async def finish(self) -> None:
        """Stop editing; an edit already on its way completes first, so the final one lands last."""
        self._finished.set()
        self._changed.set()
        await self._task


class ChatRelay:
    def __init__(self, chat: ChatService, sender: Sender, *, stream: bool) -> None:
        self.chat = self._chat = chat
        self._sender = sender
        self._stream = stream

    def _content(self, text: str, turn: ChatTurn, *, reply_to: str | None) -> dict:  # type: ignore[type-arg]
        return message_content(text, reply_to=reply_to, thread_root=turn.thread_root)

    async def answer(self, turn: ChatTurn, *, reply_to: str | None) -> None:
        """Answer one turn. `reply_to` is the member's event (None in DMs: answers just follow)."""
        async with self._chat.conversation_lock(turn.room_id, turn.thread_root):
            try:
                prepared = await self._chat.prepare(turn)
            except ChatRefused as refused:
                await self._sender.send(
                    turn.room_id, self._content(f"⚠️ {refused}", turn, reply_to=reply_to)
                )
                return
            # The typing notice and the placeholder go out while the model is already asked.
            typing = asyncio.create_task(self._sender.typing(turn.room_id, True))
            try:
                await self._run(prepared, reply_to)
            finally:
                await typing
                await self._sender.typing(turn.room_id, False)

    async def _run(self, prepared: PreparedTurn, reply_to: str | None) -> None:
        turn = prepared.turn
        started = time.monotonic()
        placeholder: str | None = None
        pacer: EditPacer | None = None
        completion: Completion | None = None
        sending: asyncio.Task[str] | None = None
        try:
            if self._stream:
                sending = asyncio.create_task(
                    self._sender.send(
                        turn.room_id, self._content(PLACEHOLDER, turn, reply_to=reply_to)
                    )
                )
                pacer = EditPacer(self._sender, turn.room_id, sending)
            try:
                completion = await self._chat.generate(prepared, pacer.update if pacer else None)
            finally:
                if pacer is not None:
                    await pacer.finish()
            if sending is not None:
                placeholder = await sending
            final = self._content(completion.text, turn, reply_to=reply_to)
            if placeholder is not None:
                await self._sender.edit(turn.room_id, placeholder, final)
                reply_id = placeholder
            else:
                reply_id = await self._sender.send(turn.room_id, final)
        except ModelError as problem:
            if sending is not None:
                with contextlib.suppress(SendError):
                    placeholder = await sending
            await self._tell_failure(turn, placeholder, reply_to, str(problem))
            return
        except SendError as problem:
            log.error("chat.delivery_failed", room_id=turn.room_id, error=str(problem))
            if completion is not None:  # the tokens were spent even if the member never saw them
                await self._chat.commit(prepared, completion, reply_event_id=None, delivered=False)
            return
        tokens = await self._chat.commit(
            prepared, completion, reply_event_id=reply_id, delivered=True
        )
        log.info(
            "chat.answered",
            room_id=turn.room_id,
            event_id=turn.event_id,
            tokens=tokens,
            edits=pacer.edits if pacer else 0,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        try:
            await self._chat.fold_into_summary(prepared)
        except ModelError as problem:
            log.warning("chat.summary_failed", error=str(problem))

    async def _tell_failure(
        self, turn: ChatTurn, placeholder: str | None, reply_to: str | None, reason: str
    ) -> None:
        content = self._content(f"⚠️ {reason}", turn, reply_to=reply_to)
        try:
            if placeholder is not None:
                await self._sender.edit(turn.room_id, placeholder, content)
            else:
                await self._sender.send(turn.room_id, content)
        except SendError as problem:
            log.error("chat.failure_notice_failed", room_id=turn.room_id, error=str(problem))
