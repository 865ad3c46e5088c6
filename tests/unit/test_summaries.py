"""The summary service over a fake timeline and a fake assistant: what is chosen for each kind of
request, and that sifting thousands of long messages never holds up the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.community.chat import Completion, PromptMessage, RoomChatSettings
from bot.community.room_history import TimelineEvent
from bot.community.summaries import (
    HistoryLimits,
    HistoryWindow,
    Summaries,
    SummaryRequest,
    SummarySettings,
)
from tests.harness.loop_lag import LoopLag

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ME = "@ann:x"


@dataclass
class FakeHistory:
    events: list[TimelineEvent]
    receipt: tuple[str, int] | None = None
    asked: list[HistoryLimits] = field(default_factory=list)

    async def recent(self, room_id: str, member: str, limits: HistoryLimits) -> HistoryWindow:
        self.asked.append(limits)
        return HistoryWindow(self.events, "join", "joined", complete=True)

    async def read_receipt(self, room_id: str, member: str) -> tuple[str, int] | None:
        return self.receipt


@dataclass
class FakeChat:
    prompts: list[list[PromptMessage]] = field(default_factory=list)

    @dataclass
    class settings:  # stands in for ChatSettings
        history_token_budget = 3000

    async def check_access(self, sender: str, room_id: str):  # type: ignore[no-untyped-def]
        return await self.room_settings(room_id), None

    async def room_settings(self, room_id: str) -> RoomChatSettings:
        return RoomChatSettings(True, "stub-model", "p", context_messages=3)

    async def answer_once(self, sender, room_id, messages):  # type: ignore[no-untyped-def]
        self.prompts.append(messages)
        return Completion("summary text")


def timeline(n: int, body: str = "message {i}") -> list[TimelineEvent]:
    start = int((NOW - timedelta(seconds=n)).timestamp() * 1000)  # one a second until now
    joined = [TimelineEvent("$join", ME, start - 1, "member", target=ME, membership="join")]
    return joined + [
        TimelineEvent(f"$m{i}", "@bob:x", start + i * 1000, "message", body=body.format(i=i))
        for i in range(n)
    ]


def service(history: FakeHistory, chat: FakeChat, **settings) -> Summaries:  # type: ignore[no-untyped-def]
    return Summaries(
        chat, history, SummarySettings(**settings), bot_user_id="@bot:x", clock=lambda: NOW
    )  # type: ignore[arg-type]


def transcript_of(chat: FakeChat) -> str:
    return chat.prompts[-1][-1].content


async def test_count_since_and_unread_choose_their_messages():
    history, chat = FakeHistory(timeline(100)), FakeChat()
    summaries = service(history, chat)
    result = await summaries.summarise(ME, "!r", SummaryRequest(count=5))
    assert result.summarised == 5 and result.text == "summary text"
    assert "message 95" in transcript_of(chat) and "message 94" not in transcript_of(chat)
    assert history.asked[-1].messages_wanted == 5

    await summaries.summarise(ME, "!r", SummaryRequest(since=timedelta(seconds=30)))
    assert "message 70" in transcript_of(chat) and "message 69" not in transcript_of(chat)

    history.receipt = ("$m97", int(NOW.timestamp() * 1000))
    history.events = [e for e in history.events if e.event_id >= "$m97" or e.kind == "member"]
    result = await summaries.summarise(ME, "!r", SummaryRequest(unread=True))
    assert result.summarised == 2 and "message 97" not in transcript_of(chat)
    assert history.asked[-1].stop_at_event == "$m97"


async def test_room_context_is_what_came_before_the_question():
    history, chat = FakeHistory(timeline(10)), FakeChat()
    lines = await service(history, chat).context_for_question("!r", ME, "$m8")
    assert lines is not None and lines[0].startswith("Recent messages")
    assert [line.split(": ")[-1] for line in lines[1:]] == ["message 5", "message 6", "message 7"]


async def test_room_context_of_a_command_stops_at_the_command():
    """`!ask` is no message the transcript keeps (commands are left out), yet what members said
    after it is not context for it either."""
    events = timeline(10)
    events[9] = TimelineEvent("$m8", ME, events[9].ts, "message", body="!ask what now?")
    history, chat = FakeHistory(events), FakeChat()
    lines = await service(history, chat).context_for_question("!r", ME, "$m8")
    assert lines is not None
    assert [line.split(": ")[-1] for line in lines[1:]] == ["message 5", "message 6", "message 7"]


async def test_thousands_of_long_messages_never_hold_up_the_event_loop():
    history = FakeHistory(timeline(2000, body="word " * 400 + "{i}"))  # 2,000 x 2 KB
    chat = FakeChat()
    summaries = service(history, chat, max_messages=2000, token_budget=100_000)
    async with LoopLag() as lag:
        result = await summaries.summarise(ME, "!r", SummaryRequest(count=2000))
        worst = lag.take()
    assert result.summarised + result.left_out == 2000
    assert worst < 0.1, f"the event loop was held up for {worst:.3f} s: {lag.stacks}"
