"""Tokens members spend on the assistant, per UTC day: reserved before a request, settled after,
with single-statement updates, so concurrent requests can neither overspend a quota nor lose a
count (two first-of-the-day rows, or two read-modify-writes, would)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import case, select, update

from bot.store.database import Database
from bot.store.models import GptUsage, User
from bot.store.upsert import insert_ignore

OPTIMISTIC_TRIES = 20


@dataclass(frozen=True)
class Held:
    """Tokens held for one request: its prompt and at most `completion` tokens of answer."""

    mxid: str
    day: date
    prompt: int
    completion: int

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True)
class DayUsage:
    used: int
    reserved: int


class UsageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def today(self, mxid: str, day: date) -> DayUsage:
        async with self._db.transaction() as session:
            row = await session.get(GptUsage, (mxid, day))
        if row is None:
            return DayUsage(0, 0)
        return DayUsage(row.prompt_tokens + row.completion_tokens, row.reserved_tokens)

    async def quota_override(self, mxid: str) -> int | None:
        async with self._db.transaction() as session:
            return await session.scalar(select(User.gpt_daily_quota).where(User.mxid == mxid))

    async def hold(
        self, mxid: str, day: date, prompt: int, grant: Callable[[int], int | None]
    ) -> Held | DayUsage:
        """Hold `prompt` plus `grant(taken)` tokens for the answer, where `taken` is what the
        day has spent and holds already; `grant` returning None refuses (the day's usage is
        returned). Compare-and-set: when another request took tokens meanwhile, `grant` is asked
        again with the new figure, so concurrent requests never decide on a stale one."""
        async with self._db.transaction() as session:
            await insert_ignore(
                session, GptUsage, mxid=mxid, day=day, prompt_tokens=0, completion_tokens=0,
                requests=0, reserved_tokens=0,
            )  # fmt: skip
        spent = GptUsage.prompt_tokens + GptUsage.completion_tokens + GptUsage.reserved_tokens
        key = (GptUsage.mxid == mxid, GptUsage.day == day)
        for _ in range(OPTIMISTIC_TRIES):
            async with self._db.transaction() as session:
                row = (await session.execute(select(spent).where(*key))).one()
                taken = int(row[0])
                completion = grant(taken)
                if completion is None:
                    return await self.today(mxid, day)
                result = await session.execute(
                    update(GptUsage)
                    .where(*key, spent == taken)
                    .values(reserved_tokens=GptUsage.reserved_tokens + prompt + completion)
                )
                if result.rowcount == 1:
                    return Held(mxid, day, prompt, completion)
        raise RuntimeError(f"could not reserve tokens for {mxid}: too much contention")

    async def settle(self, held: Held, *, prompt: int, completion: int, counted: bool) -> None:
        """Release what `held` reserved; add what was really spent when `counted`."""
        reserved = GptUsage.reserved_tokens
        values = {
            "reserved_tokens": case((reserved > held.tokens, reserved - held.tokens), else_=0)
        }
        if counted:
            values |= {
                "prompt_tokens": GptUsage.prompt_tokens + prompt,
                "completion_tokens": GptUsage.completion_tokens + completion,
                "requests": GptUsage.requests + 1,
            }
        async with self._db.transaction() as session:
            await session.execute(
                update(GptUsage)
                .where(GptUsage.mxid == held.mxid, GptUsage.day == held.day)
                .values(**values)
            )

    async def release_all(self) -> int:
        """At start-up no request is under way: whatever is still held was left by a crash."""
        async with self._db.transaction() as session:
            result = await session.execute(
                update(GptUsage).where(GptUsage.reserved_tokens != 0).values(reserved_tokens=0)
            )
            return result.rowcount or 0
