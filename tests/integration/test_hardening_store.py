"""What a hostile member's input does to the store, on SQLite and on a real PostgreSQL: text that
PostgreSQL would refuse is cleaned on the way in, an event that keeps failing is quarantined while
one that fails because the database is away is not, parallel questions cannot overspend a quota,
and the outbox delivers fairly, expires what it cannot deliver and never keeps a login token."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from bot.community.audit import AuditLog
from bot.community.chat import ChatRefused, ChatService, ChatSettings, ChatTurn
from bot.community.identity import IdentityService
from bot.community.login_links import hash_token
from bot.community.outbox import LOGIN_LINK, MAX_ATTEMPTS, OUTBOX_TTL, Outbox
from bot.community.roles import Role
from bot.community.users import UserService
from bot.llm.openai_compatible import OpenAICompatibleModel
from bot.matrix.event_guard import EventGuard
from bot.matrix.outbox_courier import OutboxCourier
from bot.store.database import Database
from bot.store.events import EventLedger
from bot.store.models import ChatMessage, GptUsage, LoginLink, OutboxMessage, utcnow
from tests.harness.linking import link
from tests.harness.llm_stub import LlmStub

ALICE, MALLORY, BOB = "@alice:x", "@mallory:x", "@bob:x"
NUL = "\x00"


@pytest.fixture
async def db(migrated_db):
    await link(migrated_db, ALICE)
    await link(migrated_db, MALLORY)
    await link(migrated_db, BOB)
    return migrated_db


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0) as server:
        yield server


def chat_service(db: Database, stub: LlmStub, **changes) -> ChatService:  # type: ignore[no-untyped-def]
    settings = ChatSettings(
        enabled=True, model="stub-model", system_prompt="Be brief.", require_sso=True,
        history_token_budget=400, summarize=False, daily_quota={Role.USER: 1000}, max_tokens=64,
    )  # fmt: skip
    model = OpenAICompatibleModel(
        base_url=stub.base_url, api_key="sk-test", temperature=0.2, timeout=5.0,
        max_retries=0, stream=True,
    )  # fmt: skip
    return ChatService(
        db, dataclasses.replace(settings, **changes), model,
        identity=IdentityService(db, []), users=UserService(db, []),
    )  # fmt: skip


async def answer(chat: ChatService, turn: ChatTurn) -> int:
    prepared = await chat.prepare(turn)
    completion = await chat.generate(prepared, None)
    return await chat.commit(prepared, completion, reply_event_id="$re", delivered=True)


# -- text that PostgreSQL refuses ------------------------------------------------------------


async def test_nul_and_overlong_text_never_fail_a_write(db, stub):
    chat = chat_service(db, stub)
    name = "N" * 300 + NUL  # display names reach 256 characters; columns hold 255
    turn = ChatTurn("!r:x", "$root", MALLORY, name, "hello" + NUL * 50, "$e" + NUL)
    tokens = await answer(chat, turn)
    assert tokens > 0
    async with db.transaction() as session:
        stored = list(await session.scalars(select(ChatMessage).order_by(ChatMessage.id)))
        usage = await session.get(GptUsage, (MALLORY, utcnow().date()))
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[0].content == "hello" and len(stored[0].author_name or "") == 255
    assert usage is not None and usage.prompt_tokens + usage.completion_tokens == tokens
    # An edit pointing at an id with NUL in it, and carrying NUL: looked up and stored clean.
    assert await chat.edit_event("$e" + NUL, "edited" + NUL, MALLORY)
    assert (await chat.history("!r:x", "$root"))[0].content == "edited"
    assert not await chat.forget_event("$" + NUL * 300)
    await AuditLog(db).record(actor=MALLORY + NUL, action="x", reason=NUL, detail={NUL: [NUL]})
    await Outbox(db).put("body" + NUL, recipient=MALLORY + NUL)
    ledger = EventLedger(db, "@bot:x")
    assert await ledger.claim("$" + NUL + "a" * 400, "!r:x" + NUL)


# -- poison events ---------------------------------------------------------------------------


async def test_an_event_that_keeps_failing_is_quarantined_and_skipped(db):
    ledger = EventLedger(db, "@bot:x")
    guard = EventGuard(ledger)
    calls: list[bool] = []

    async def poison(retry: bool) -> None:
        calls.append(retry)
        raise DBAPIError("INSERT ...", {}, Exception("invalid byte sequence"))

    await guard.run("!r:x", "$poison", poison)  # returns: the sync loop moves on
    assert calls == [False, True, True]
    [recorded] = await ledger.quarantined()
    assert (recorded.event_id, recorded.attempts) == ("$poison", 3)
    assert "DBAPIError" in recorded.error
    assert not await ledger.claim("$poison", "!r:x")  # never handled again, not after a restart
    assert await ledger.unfinished(utcnow() - timedelta(hours=1), utcnow()) == []

    async def bug(retry: bool) -> None:
        raise KeyError("a bug, not the database")

    await guard.run("!r:x", "$bug", bug)
    assert {q.event_id for q in await ledger.quarantined()} == {"$poison", "$bug"}


async def test_a_database_outage_is_not_blamed_on_the_event(tmp_path):
    # A database that cannot be reached: the batch must fail (and come again), not be skipped.
    away = Database("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    try:
        guard = EventGuard(EventLedger(away, "@bot:x"))

        async def handler(retry: bool) -> None:
            raise DBAPIError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

        with pytest.raises(DBAPIError):
            await guard.run("!r:x", "$fine", handler)
        assert guard.quarantined == 0
    finally:
        await away.close()


# -- quotas under concurrency ---------------------------------------------------------------


async def test_parallel_questions_cannot_overspend_the_quota(db, stub):
    chat = chat_service(db, stub, daily_quota={Role.USER: 100}, max_tokens=1024)
    stub.latency = 0.3  # all eight are in flight together
    stub.reply = " ".join(["word"] * 120)  # one answer alone would take more than the quota

    async def ask(i: int) -> str:
        # `!ask` in a room: each question opens its own thread, so all run at once.
        turn = ChatTurn("!room:x", f"$q{i}", ALICE, "Alice", f"question {i}", f"$q{i}")
        try:
            await answer(chat, turn)
        except ChatRefused as refused:
            return str(refused)
        return "answered"

    outcomes = await asyncio.gather(*(ask(i) for i in range(8)))
    usage = await chat.usage_today(ALICE, Role.USER)
    assert outcomes.count("answered") >= 1
    refusals = [o for o in outcomes if o != "answered"]
    assert refusals and all("still being answered" in r for r in refusals), outcomes
    assert usage.used <= usage.quota, usage
    async with db.transaction() as session:
        row = await session.get(GptUsage, (ALICE, utcnow().date()))
    assert row is not None and row.reserved_tokens == 0  # every hold was settled
    assert row.requests == outcomes.count("answered")
    # The answer was cut to what the quota left, and the member is told why.
    prepared = await chat.prepare(ChatTurn("!room:x", "$t", BOB, None, "hi", "$t"))
    completion = await chat.generate(prepared, None)
    assert completion.cut_short and len(completion.text.split()) < 120
    assert chat.shown_answer(prepared, completion).endswith(
        "*(Cut short: your daily quota is nearly used up.)*"
    )
    await chat.release(prepared)


async def test_first_questions_of_the_day_at_once_lose_no_count(db, stub):
    chat = chat_service(db, stub, daily_quota={Role.USER: 0})  # no limit: all run
    stub.latency = 0.2
    turns = [ChatTurn("!dm:x", None, ALICE, None, f"q{i}", f"$f{i}") for i in range(8)]
    spent = await asyncio.gather(*(answer(chat, t) for t in turns))
    assert (await chat.usage_today(ALICE, Role.USER)).used == sum(spent)


async def test_a_dm_conversation_belongs_to_the_member_not_the_room(db, stub):
    chat = chat_service(db, stub)
    await answer(chat, ChatTurn("!dm:x", None, MALLORY, None, "my secret is 42", "$m1"))
    # Later someone else is the member of that (invite-only, two-person) room.
    await answer(chat, ChatTurn("!dm:x", None, ALICE, None, "what do you know?", "$a1"))
    sent = [m["content"] for m in stub.requests[-1]["messages"]]
    assert not any("42" in c for c in sent), sent
    history = await chat.history("!dm:x", None, ALICE)
    assert history[0].content == "what do you know?"


# -- the outbox ------------------------------------------------------------------------------


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send_markdown(self, room_id: str, markdown: str, **_: object) -> list[str]:
        self.sent.append((room_id, markdown))
        return [f"$sent{len(self.sent)}"]


class FakeDirect:
    """Every recipient has a DM; those in `not_joined` have not accepted it yet."""

    def __init__(self, not_joined: set[str]) -> None:
        self.not_joined = not_joined

    async def room_for(self, mxid: str, **_: object) -> str:
        return f"!dm-{mxid}"

    def send_delay(self, room_id: str, mxid: str) -> float | None:
        return None if mxid in self.not_joined else 0.0


async def test_the_outbox_is_fair_expires_and_keeps_no_login_token(db):
    outbox = Outbox(db)
    waiting = {f"@new{i}:x" for i in range(60)}
    for mxid in sorted(waiting):
        await outbox.put("welcome!", recipient=mxid)
    await outbox.put("you are linked", recipient=ALICE)
    sender, direct = FakeSender(), FakeDirect(waiting)

    async def compose(message) -> str:  # type: ignore[no-untyped-def]
        return f"{message.body} https://bot.example/login/TOKEN-FOR-{message.recipient}"

    courier = OutboxCourier(outbox, sender, direct, compose_login_link=compose)  # type: ignore[arg-type]
    # Sixty newcomers who never join their DM do not hold up the sixty-first message.
    while await courier.deliver_pending() or await outbox.pending():
        pass
    assert sender.sent == [("!dm-@alice:x", "you are linked")]
    # They are tried again later, not in a busy loop; once one joins it goes at once.
    assert await outbox.pending() == []
    direct.not_joined.discard("@new7:x")
    await courier.recipient_joined("@new7:x")
    await courier.deliver_pending()
    assert sender.sent[-1] == ("!dm-@new7:x", "welcome!")

    # A login link is composed when it goes out: the table never holds a usable token.
    await outbox.put("Welcome! Link your account.", recipient=MALLORY, kind=LOGIN_LINK)
    await courier.deliver_pending()
    assert sender.sent[-1][1].startswith("Welcome! Link your account. https://bot.example/login/")
    async with db.transaction() as session:
        bodies = list(await session.scalars(select(OutboxMessage.body)))
    assert not any("/login/" in b for b in bodies)

    # What could not be delivered within the TTL expires, logged in the audit log.
    async with db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.delivered_at.is_(None))
            .values(created_at=utcnow() - OUTBOX_TTL - timedelta(minutes=1))
        )
    assert await outbox.expire_stale() == 59
    expired = [e for e in await AuditLog(db).recent(100) if e.action == "outbox.expired"]
    assert len(expired) == 59 and {e.target for e in expired} == waiting - {"@new7:x"}
    # And delivered or expired rows are purged after their retention.
    month_ago = utcnow() - timedelta(days=30)
    async with db.transaction() as session:
        for column in (OutboxMessage.delivered_at, OutboxMessage.expired_at):
            await session.execute(
                update(OutboxMessage).where(column.is_not(None)).values({column: month_ago})
            )
    assert await outbox.purge_delivered() == 62
    assert await outbox.pending() == []


async def test_a_message_that_keeps_failing_expires_after_its_attempts(db):
    outbox = Outbox(db)
    await outbox.put("doomed", room_id="!gone:x")
    [message] = await outbox.pending()
    for _ in range(MAX_ATTEMPTS):
        await outbox.mark_failed(message.id, "M_FORBIDDEN")
    assert await outbox.pending() == []
    [entry] = [e for e in await AuditLog(db).recent(10) if e.action == "outbox.expired"]
    assert entry.room_id == "!gone:x" and "20 failed attempts" in (entry.reason or "")


async def test_a_login_link_made_at_delivery_is_stored_hashed_only(db):
    from bot.community.login_links import LoginLinks

    links = LoginLinks(db, timedelta(minutes=10))
    token = await links.issue(MALLORY)
    async with db.transaction() as session:
        rows = list(await session.scalars(select(LoginLink).where(LoginLink.mxid == MALLORY)))
    assert [r.token_hash for r in rows][-1] == hash_token(token) != token


async def test_forget_scrubs_personal_data_from_audit_details(db):
    from bot.community.members import MemberAdmin
    from bot.community.permissions import Party

    members = MemberAdmin(db, ["@root:x"], "@bot:x")
    root = Party("@root:x", Role.ADMIN)
    await members.set_active(root, MALLORY, False, reason="spamming", room_id=None)
    before = [e for e in await AuditLog(db).recent(50) if MALLORY in (e.target, e.actor)]
    assert any(e.detail and e.detail.get("username") == "mallory" for e in before)
    await members.forget(root, MALLORY, room_id=None)
    after = [e for e in await AuditLog(db).recent(50) if MALLORY in (e.target, e.actor)]
    actions = [e.action for e in after]
    assert "identity.link" in actions and "deactivate" in actions  # the facts stay
    for entry in after:
        if entry.action != "forget":
            assert entry.detail in (None, {"scrubbed": "forget"}), entry
    assert "mallory" not in str([e.detail for e in after if e.action != "forget"])
    assert next(e for e in after if e.action == "deactivate").reason == "spamming"
