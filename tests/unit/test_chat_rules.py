"""The assistant's rules without a database: who may chat, what the quota allows, what the model
sees. The stores are stood in for by plain objects (their SQL has its own tests on SQLite and
PostgreSQL in tests/integration)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bot.community.chat import (
    ChatRefused,
    ChatService,
    ChatSettings,
    ChatTurn,
    Completion,
    answer_allowance,
)
from bot.community.roles import Role
from bot.community.users import Caller
from bot.store.chat import OpenConversation, RoomOverrides, StoredMessage
from bot.store.chat_usage import DayUsage, Held

NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Store:
    def __init__(self, overrides=None, history=(), summary=None):  # type: ignore[no-untyped-def]
        self.overrides = overrides or RoomOverrides()
        self.history, self.summary = list(history), summary

    async def room_overrides(self, room_id):  # type: ignore[no-untyped-def]
        return self.overrides

    async def open_conversation(self, room_id, thread_root, member, recent):  # type: ignore[no-untyped-def]
        newest_first = list(reversed(self.history))[:recent]
        return OpenConversation(1, self.summary, None), newest_first


class Usage:
    def __init__(self, taken: int = 0, used: int = 0, reserved: int = 0) -> None:
        self.taken, self.day = taken, DayUsage(used, reserved)

    async def hold(self, mxid, day, prompt, grant):  # type: ignore[no-untyped-def]
        completion = grant(self.taken)
        return self.day if completion is None else Held(mxid, day, prompt, completion)

    async def today(self, mxid: str, day: date) -> DayUsage:
        return self.day

    async def quota_override(self, mxid: str) -> int | None:
        return None


class Members:
    def __init__(self, *, active: bool = True, linked: bool = True) -> None:
        self.active, self.linked = active, linked

    async def caller(self, mxid: str) -> Caller:
        return Caller(Role.USER, self.active, None)

    async def bindings_of(self, mxid: str) -> list[str]:
        return ["binding"] if self.linked else []


def service(store=None, usage=None, members=None, **settings):  # type: ignore[no-untyped-def]
    members = members or Members()
    values = dict(
        enabled=True, model="m", system_prompt="Be brief.", require_sso=True,
        history_token_budget=200, summarize=False, daily_quota={Role.USER: 1000}, max_tokens=100,
    )  # fmt: skip
    values.update(settings)
    return ChatService(
        None, ChatSettings(**values), model=None, identity=members, users=members,  # type: ignore[arg-type]
        clock=lambda: NOON, store=store or Store(), usage=usage or Usage(),
    )  # fmt: skip


def turn(text: str = "hello", name: str | None = None) -> ChatTurn:
    return ChatTurn("!r:x", "$root" if name else None, "@ann:x", name, text, "$e")


@pytest.mark.parametrize(
    ("taken", "quota", "prompt", "expected"),
    [
        (0, 0, 50, 100),  # no quota: the longest answer
        (0, 1000, 50, 100),
        (900, 1000, 50, 50),  # what the quota leaves
        (990, 1000, 50, 16),  # nearly used up: still a short answer
        (1000, 1000, 50, None),  # used up (spent and held): refused
        (1500, 1000, 50, None),
    ],
)
def test_how_long_an_answer_may_be(taken, quota, prompt, expected):
    assert answer_allowance(taken, quota, prompt, longest=100) == expected


async def test_who_may_chat():
    with pytest.raises(ChatRefused, match="switched off in this room"):
        await service(Store(RoomOverrides(enabled=False))).prepare(turn())
    with pytest.raises(ChatRefused, match="deactivated"):
        await service(members=Members(active=False)).prepare(turn())
    with pytest.raises(ChatRefused, match="link your community account first"):
        await service(members=Members(linked=False)).prepare(turn())
    await service(members=Members(linked=False), require_sso=False).prepare(turn())


async def test_quota_refusals_say_why():
    with pytest.raises(ChatRefused, match=r"used your 1,000 tokens for today.*in 12 h 0 min"):
        await service(usage=Usage(taken=1000, used=1000)).prepare(turn())
    # Spent less than the quota, but questions under way hold the rest: wait for them.
    with pytest.raises(ChatRefused, match="other questions are still being answered"):
        await service(usage=Usage(taken=1000, used=200, reserved=800)).prepare(turn())


async def test_what_the_model_sees():
    history = [
        StoredMessage(1, "user", "first question", 80, "Bob"),
        StoredMessage(2, "assistant", "first answer", 60),
        StoredMessage(3, "user", "second question", 20, "Bob"),
        StoredMessage(4, "assistant", "second answer", 20),
    ]
    prepared = await service(Store(history=history, summary="they met")).prepare(
        turn("third question", name="Ann")
    )
    assert [(m.role, m.content) for m in prepared.messages] == [
        ("system", "Be brief."),
        ("system", "Summary of the earlier conversation: they met"),
        ("user", "Bob: second question"),  # whole recent turns that fit the budget
        ("assistant", "second answer"),
        ("user", "Ann: third question"),
    ]
    assert prepared.oldest_in_window == 3 and prepared.max_tokens == 100


async def test_a_room_may_choose_its_model_and_prompt():
    store = Store(RoomOverrides(model="big", prompt="Talk like a pirate."))
    chat = service(store)
    room = await chat.room_settings("!r:x")
    assert (room.model, room.prompt, room.overridden) == (
        "big",
        "Talk like a pirate.",
        frozenset({"model", "prompt"}),
    )
    prepared = await chat.prepare(turn())
    assert prepared.model == "big" and prepared.messages[0].content == "Talk like a pirate."


async def test_an_answer_cut_at_the_quota_says_so():
    chat = service(usage=Usage(taken=960))
    prepared = await chat.prepare(turn())
    assert prepared.max_tokens < 100
    shown = chat.shown_answer(prepared, Completion("partial", cut_short=True))
    assert shown == "partial\n\n*(Cut short: your daily quota is nearly used up.)*"
    full = await service().prepare(turn())
    assert (
        service()
        .shown_answer(full, Completion("long", cut_short=True))
        .endswith("*(Cut short: it reached the longest answer I may give.)*")
    )
    assert service().shown_answer(full, Completion("whole")) == "whole"
