"""Catch-up summaries (`!summary`) and room context for questions: the assistant reads a room's
recent messages on a member's behalf — never more than that member could see (room_history.py) —
within bounded events, text and tokens, and counted against the member's quota like any turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.community.chat import ChatRefused, ChatService, PromptMessage
from bot.community.room_history import (
    RoomMessage,
    TimelineEvent,
    messages,
    since,
    transcript,
    visible_to,
)
from bot.offload import off_loop
from bot.store.models import utcnow

SUMMARY_SYSTEM_PROMPT = (
    "You summarise a chat room's recent messages for a member who was away. Say who said or "
    "decided what, list open questions and anything addressed to the member, and be brief: "
    "at most 200 words, in Markdown. Only use the messages given; never invent."
)
RECEIPT_GRACE_MS = 60_000
CONTEXT_INTRO = (
    "Recent messages in this room, oldest first, for context (the question follows them):"
)


@dataclass(frozen=True)
class HistoryWindow:
    """What the homeserver gave back: events oldest first, and the room as it is now."""

    events: list[TimelineEvent]
    membership_now: str  # the member's: "join", "invite", "leave", ...
    visibility_now: str
    complete: bool  # reached the room's beginning (nothing older exists)


@dataclass(frozen=True)
class HistoryLimits:
    max_events: int  # events read from the homeserver, at most
    max_chars: int  # message text read, at most
    messages_wanted: int | None = None  # stop once this many messages were read
    since_ms: int | None = None  # stop at events older than this
    stop_at_event: str | None = None  # stop once this event was read


class RoomHistory(Protocol):
    """The room's timeline, read back from now (bot/matrix implements it)."""

    async def recent(self, room_id: str, member: str, limits: HistoryLimits) -> HistoryWindow: ...

    async def read_receipt(self, room_id: str, member: str) -> tuple[str, int] | None:
        """The event the member's `m.read` receipt points at and when they read it (ms), if any."""
        ...


@dataclass(frozen=True)
class SummaryRequest:
    count: int | None = None  # the last N messages
    since: timedelta | None = None  # the messages of this last stretch of time
    unread: bool = False  # since the member's read receipt


@dataclass(frozen=True)
class SummarySettings:
    default_messages: int = 50
    max_messages: int = 500
    max_events: int = 2_000
    max_chars: int = 200_000
    token_budget: int = 6_000
    command_prefix: str = "!"


@dataclass(frozen=True)
class Summary:
    text: str  # the model's summary
    summarised: int  # messages the model read
    left_out: int  # older matching messages that did not fit the budget
    note: str = ""  # something the member should know (the history ended early, ...)


class NothingToSummarise(ChatRefused):
    pass


def _text_size(window: HistoryWindow) -> int:
    return sum(len(e.body or "") for e in window.events)


class Summaries:
    def __init__(
        self,
        chat: ChatService,
        history: RoomHistory,
        settings: SummarySettings,
        *,
        bot_user_id: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._chat = chat
        self._history = history
        self.settings = settings
        self._bot = bot_user_id
        self._clock = clock

    def _readable(
        self, member: str, window: HistoryWindow, *, before: str | None = None
    ) -> list[RoomMessage]:
        """The messages `member` could see; with `before`, only those older than that event
        (cut among the events, so a question that is itself no message — a command — still
        cuts off what came after it)."""
        seen = visible_to(
            member, window.events, membership_now=window.membership_now,
            visibility_now=window.visibility_now,
        )  # fmt: skip
        if before is not None:
            for i, event in enumerate(seen):
                if event.event_id == before:
                    seen = seen[:i]
                    break
        prefix = self.settings.command_prefix
        return messages(seen, bot_user_id=self._bot, command_prefix=prefix)

    async def summarise(self, member: str, room_id: str, request: SummaryRequest) -> Summary:
        """Raises ChatRefused (with a reason for the member) or ModelError."""
        s = self.settings
        room, _ = await self._chat.check_access(member, room_id)
        receipt = None
        since_ms = None
        wanted: int | None = None
        if request.unread:
            read = await self._history.read_receipt(room_id, member)
            if read is None:
                raise NothingToSummarise(
                    "I do not know where you stopped reading here (your client sends no read "
                    "receipts, or keeps them private). Ask for the last messages instead, e.g. "
                    f"`{s.command_prefix}summary 50`."
                )
            # Read back to that event; or, where it is not among the events read (a reaction,
            # a state change), to a minute before they read it.
            receipt, since_ms = read[0], read[1] - RECEIPT_GRACE_MS
        elif request.since is not None:
            since_ms = int((self._clock() - request.since).timestamp() * 1000)
        else:
            wanted = min(request.count or s.default_messages, s.max_messages)
        limits = HistoryLimits(
            s.max_events, s.max_chars, messages_wanted=wanted, since_ms=since_ms,
            stop_at_event=receipt,
        )  # fmt: skip
        window = await self._history.recent(room_id, member, limits)
        moment = self._clock() - request.since if request.since is not None else None

        def choose() -> tuple[list[str], int, int]:
            """(transcript lines, messages left out for the budget, messages chosen)."""
            readable = self._readable(member, window)
            if receipt is not None:  # the history was read back to the receipt, if it could be
                chosen = [m for m in readable if m.event_id != receipt]
            elif moment is not None:
                chosen = since(readable, moment)
            else:
                chosen = readable[-(wanted or 1) :]
            chosen = chosen[-s.max_messages :]
            return *transcript(chosen, s.token_budget, room.model), len(chosen)

        # Thousands of messages are sifted and counted off the event loop.
        lines, left_out, chosen = await off_loop(choose, _text_size(window))
        note = ""
        reached = receipt is None or any(e.event_id == receipt for e in window.events)
        cut_off = len(window.events) >= s.max_events or _text_size(window) >= s.max_chars
        if not reached and cut_off:
            note = "You have more unread than I can read back; this covers the newest."
        if not chosen:
            raise NothingToSummarise("There is nothing here for me to summarise for you.")
        if not lines:
            raise NothingToSummarise("The messages are too long for me to summarise.")
        prompt = [
            PromptMessage("system", SUMMARY_SYSTEM_PROMPT),
            PromptMessage("user", "Messages, oldest first:\n\n" + "\n".join(lines)),
        ]
        completion = await self._chat.answer_once(member, room_id, prompt)
        return Summary(completion.text.strip(), len(lines), left_out, note)

    async def room_context(
        self, member: str, room_id: str, before_event: str, count: int, budget: int, model: str
    ) -> list[str]:
        """The `count` messages before `before_event` that `member` could see, as transcript
        lines within `budget` tokens (empty when there are none)."""
        if count <= 0:
            return []
        s = self.settings
        limits = HistoryLimits(
            min(s.max_events, 20 * count + 50), min(s.max_chars, 2_000 * count + 2_000),
            messages_wanted=count + 1,
        )  # fmt: skip
        window = await self._history.recent(room_id, member, limits)

        def choose() -> list[str]:
            # Only what came before the question (a message still arriving may follow it).
            readable = self._readable(member, window, before=before_event)
            return transcript(readable[-count:], budget, model)[0]

        return await off_loop(choose, _text_size(window))

    async def context_for_question(
        self, room_id: str, member: str, event_id: str
    ) -> tuple[str, ...] | None:
        """For a question in a room with room context: its recent messages the member could see
        (an introduction first), within half the history budget; None when the room has none."""
        room = await self._chat.room_settings(room_id)
        if room.context_messages <= 0:
            return None
        budget = self._chat.settings.history_token_budget // 2
        lines = await self.room_context(
            member, room_id, event_id, room.context_messages, budget, room.model
        )
        return (CONTEXT_INTRO, *lines) if lines else ()
