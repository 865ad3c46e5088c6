"""Relaying a chat turn to Matrix: typing, then the answer. One ready within about a second is sent
as one message; a slower one gets a short placeholder edited as the answer streams in (at an
interval rising from 0.5 s to 3 s, so the homeserver is not flooded), and a final edit with the
whole answer rendered; an answer too long for one event continues in further messages.
A failed turn leaves an error message, never half an answer; so does one cut off by a restart,
whose placeholder is taken up again (edited) rather than left behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from bot.commands.executor import Message
from bot.community.chat import (
    ChatRefused,
    ChatService,
    ChatTurn,
    Completion,
    ModelError,
    PreparedTurn,
)
from bot.matrix.message_size import render_parts, split_markdown
from bot.matrix.reasoning_view import THINKING, reasoning_content, with_reasoning
from bot.matrix.render import message_content
from bot.matrix.sender import Sender, SendError
from bot.offload import off_loop
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

PLACEHOLDER = "…"
# An answer ready sooner needs no placeholder and no edits (the typing notice shows meanwhile):
# fewer events for the homeserver, the member sees the answer in one piece.
PLACEHOLDER_AFTER_S = 2.0
FIRST_EDIT_INTERVAL_S = 0.5
MAX_EDIT_INTERVAL_S = 3.0
INTERVAL_GROWTH = 1.5
INTERRUPTED = (
    "⚠️ This answer was interrupted because I restarted. Please ask again if you still need it."
)
NOTICE_TIMEOUT_S = 5.0

PlaceholderSink = Callable[[str], Awaitable[None]]
# The room's recent messages a question may see: (room, asker, question's event) -> lines.
RoomContextSource = Callable[[str, str, str], Awaitable[tuple[str, ...] | None]]


def _streaming_content(text: str) -> dict[str, Any]:
    """What the placeholder shows while the answer grows: as much as one edit can carry."""
    if text == THINKING:  # a reasoning model thinks; no answer yet
        return message_content(THINKING)
    shown = split_markdown(text, max_parts=1)[0]
    return message_content(f"{shown} {PLACEHOLDER}")


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
                self._shown = latest = self._latest
                try:
                    content = await off_loop(
                        lambda latest=latest: _streaming_content(latest),  # type: ignore[misc]
                        len(latest),
                    )
                    await self._sender.edit(self._room_id, event_id, content)
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


class _Progress:
    """The answer so far, passed on to the pacer once there is one."""

    def __init__(self) -> None:
        self.text = ""
        self.pacer: EditPacer | None = None

    def update(self, text: str) -> None:
        self.text = text
        if self.pacer is not None:
            self.pacer.update(text)

    def show_in(self, pacer: EditPacer) -> None:
        self.pacer = pacer
        if self.text:
            pacer.update(self.text)


class ChatRelay:
    def __init__(
        self,
        chat: ChatService,
        sender: Sender,
        *,
        stream: bool,
        placeholder_after_s: float = PLACEHOLDER_AFTER_S,
    ) -> None:
        self.chat = self._chat = chat
        self._sender = sender
        self._stream = stream
        self._placeholder_after_s = placeholder_after_s
        self._background: set[asyncio.Task[None]] = set()
        # Rooms with room context (`!gpt context N`): None (the room has none) or the lines.
        self.room_context: RoomContextSource | None = None
        # Told of every delivered answer: (turn, answer text, the event it replied to).
        self.after_answer: Callable[[ChatTurn, str, str | None], Awaitable[None]] | None = None

    def _content(self, text: str, turn: ChatTurn, *, reply_to: str | None) -> dict[str, Any]:
        return message_content(text, reply_to=reply_to, thread_root=turn.thread_root)

    async def answer_message(
        self, message: Message, text: str, *, sender_name: str | None, ledger: EventLedger
    ) -> None:
        """Answer a member's message (a DM, a mention, `!ask`, a thread follow-up). The
        placeholder is recorded with the message's claim, so a restart edits it, not another."""
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        context = None
        if self.room_context is not None and not message.is_direct and not message.thread_root:
            try:
                context = await self.room_context(message.room_id, message.sender, message.event_id)
            except Exception:  # the question is answered without it
                log.exception("chat.room_context_failed", room_id=message.room_id)
                context = ()
        turn = ChatTurn(
            room_id=message.room_id,
            # In a room the answer opens a thread on the question (or continues the thread);
            # with room context, the room is the conversation: the answer stays in it.
            thread_root=None if message.is_direct or context is not None
            else (message.thread_root or message.event_id),
            sender=message.sender, sender_name=sender_name, text=text, event_id=message.event_id,
            room_context=context or (),
        )  # fmt: skip

        async def remember(placeholder: str) -> None:
            await ledger.set_reply(message.event_id, placeholder)

        # Only a message taken up again after a restart can have a placeholder already.
        placeholder = await ledger.reply_of(message.event_id) if message.resumed else None
        try:
            await self.answer(
                turn, reply_to=None if message.is_direct else message.event_id,
                placeholder=placeholder, on_placeholder=remember,
            )  # fmt: skip
        except Exception:
            log.exception("chat.failed", sender=message.sender)

    async def answer(
        self,
        turn: ChatTurn,
        *,
        reply_to: str | None,
        placeholder: str | None = None,
        on_placeholder: PlaceholderSink | None = None,
    ) -> None:
        """Answer one turn. `reply_to` is the member's event (None in DMs: answers just follow).
        `placeholder` is a message of ours to edit into the answer (one left by a restart);
        `on_placeholder` learns the placeholder's id once it is sent, so a restart finds it."""
        lock = self._chat.conversation_lock(turn.room_id, turn.thread_root, turn.sender)
        async with lock:
            try:
                prepared = await self._chat.prepare(turn)
            except ChatRefused as refused:
                await self._say(turn, placeholder, reply_to, f"⚠️ {refused}")
                return
            # The typing notice goes out while the model is already asked; ending it is not
            # worth making the member wait for.
            typing = asyncio.create_task(self._sender.typing(turn.room_id, True))
            try:
                await self._run(prepared, reply_to, placeholder, on_placeholder)
            finally:
                await typing
                self._in_background(self._sender.typing(turn.room_id, False))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _placeholder(
        self, turn: ChatTurn, reply_to: str | None, on_placeholder: PlaceholderSink | None
    ) -> str:
        event_id = await self._sender.send(
            turn.room_id, self._content(PLACEHOLDER, turn, reply_to=reply_to)
        )
        if on_placeholder is not None:
            await on_placeholder(event_id)
        return event_id

    async def _run(
        self,
        prepared: PreparedTurn,
        reply_to: str | None,
        placeholder: str | None,
        on_placeholder: PlaceholderSink | None,
    ) -> None:
        turn = prepared.turn
        started = time.monotonic()
        pacer: EditPacer | None = None
        completion: Completion | None = None
        sending: asyncio.Future[str] | None = None
        progress = _Progress()
        generating = asyncio.ensure_future(
            self._chat.generate(
                prepared,
                progress.update if self._stream else None,
                (lambda _reasoning: progress.update(THINKING)) if self._stream else None,
            )
        )
        try:
            if placeholder is not None:
                sending = asyncio.get_running_loop().create_future()
                sending.set_result(placeholder)
            elif self._stream:
                # A placeholder only if the answer is not ready within a moment.
                await asyncio.wait({generating}, timeout=self._placeholder_after_s)
                if not generating.done():
                    sending = asyncio.ensure_future(
                        self._placeholder(turn, reply_to, on_placeholder)
                    )
            if sending is not None and self._stream:
                pacer = EditPacer(self._sender, turn.room_id, sending)
                progress.show_in(pacer)
            try:
                completion = await generating
            finally:
                if pacer is not None:
                    await pacer.finish()
            if sending is not None:
                placeholder = await sending
            answer = self._chat.shown_answer(prepared, completion)
            reasoning = completion.reasoning if prepared.show_reasoning else ""
            reply_id = await self._deliver(answer, turn, reply_to, placeholder, reasoning)
        except ModelError as problem:
            if sending is not None:
                with contextlib.suppress(SendError):
                    placeholder = await sending
            await self._say(turn, placeholder, reply_to, f"⚠️ {problem}")
            return
        except SendError as problem:
            log.error("chat.delivery_failed", room_id=turn.room_id, error=str(problem))
            if completion is None:
                await self._chat.release(prepared)
            else:  # the tokens were spent even if the member never saw them
                await self._chat.commit(prepared, completion, reply_event_id=None, delivered=False)
            await self._say(
                turn, placeholder, reply_to,
                f"⚠️ I could not deliver the assistant's answer ({problem}). Please ask again.",
            )  # fmt: skip
            return
        except asyncio.CancelledError:
            # Shutting down mid-answer: leave a notice, not half an answer (a restart may
            # take the question up again and edit this same message).
            generating.cancel()
            await self._chat_cut_off(prepared, placeholder or _done(sending), turn, reply_to)
            raise
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
        if self.after_answer is not None:  # e.g. the answer spoken (media_relay.py)
            await self.after_answer(turn, completion.text, reply_to)
        try:
            await self._chat.fold_into_summary(prepared)
        except ModelError as problem:
            log.warning("chat.summary_failed", error=str(problem))

    async def _deliver(
        self,
        text: str,
        turn: ChatTurn,
        reply_to: str | None,
        placeholder: str | None,
        reasoning: str = "",
    ) -> str:
        """The whole answer: into the placeholder when there is one, then as many further
        messages as a long answer needs; a reasoning model's thinking (when the room shows it)
        folded above it, or just before it when it does not fit. Returns the first message's id."""
        parts = await render_parts(
            text, reply_to=reply_to, thread_root=turn.thread_root, as_edit=placeholder is not None
        )
        if reasoning:
            folded = with_reasoning(parts[0], reasoning)
            if folded is not None:
                parts[0] = folded
            else:
                relation = {"reply_to": reply_to, "thread_root": turn.thread_root}
                await self._sender.send(turn.room_id, reasoning_content(reasoning, **relation))
        if placeholder is not None:
            await self._sender.edit(turn.room_id, placeholder, parts[0])
            first = placeholder
        else:
            first = await self._sender.send(turn.room_id, parts[0])
        for part in parts[1:]:
            await self._sender.send(turn.room_id, part)
        return first

    async def _chat_cut_off(
        self, prepared: PreparedTurn, placeholder: str | None, turn: ChatTurn, reply_to: str | None
    ) -> None:
        async def tidy() -> None:
            await self._chat.release(prepared)
            if placeholder is not None:
                await self._say(turn, placeholder, reply_to, INTERRUPTED)

        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(tidy()), NOTICE_TIMEOUT_S)

    async def interrupted(self, room_id: str, placeholder: str) -> None:
        """A placeholder a previous run left behind, for a question that will not be taken up."""
        try:
            await self._sender.edit(room_id, placeholder, message_content(INTERRUPTED))
        except SendError as problem:
            log.error("chat.notice_failed", room_id=room_id, error=str(problem))

    async def _say(
        self, turn: ChatTurn, placeholder: str | None, reply_to: str | None, text: str
    ) -> None:
        """A short notice: into the placeholder when there is one, else as a message."""
        content = self._content(text, turn, reply_to=reply_to)
        try:
            if placeholder is not None:
                await self._sender.edit(turn.room_id, placeholder, content)
            else:
                await self._sender.send(turn.room_id, content)
        except SendError as problem:
            log.error("chat.notice_failed", room_id=turn.room_id, error=str(problem))


def _done(future: asyncio.Future[str] | None) -> str | None:
    """The placeholder's id if its send has completed, else None."""
    if future is None or not future.done() or future.cancelled() or future.exception():
        return None
    return future.result()
