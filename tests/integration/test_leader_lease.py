"""The leader lease on a real PostgreSQL: one holder at a time, a growing epoch, take-over after
expiry or release, and fencing: a leader whose lease lapsed gets no claim and no sync token in,
whether it notices by its own clock or only the database knows. With SQLite there is no lease."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from bot.leader import LeaderLease, LeaseLost
from bot.store.database import Database
from bot.store.events import EventLedger
from bot.store.migrate import upgrade_to_head
from bot.store.models import HandledEvent, SyncState, utcnow

ACCOUNT = "@bot:example.org"


def raise_lost() -> None:
    raise LeaseLost("test")


def lease(db: Database, seconds: int = 2, heartbeat: int = 1) -> LeaderLease:
    return LeaderLease(db, ACCOUNT, lease=timedelta(seconds=seconds),
                       heartbeat=timedelta(seconds=heartbeat), on_lost=raise_lost)  # fmt: skip


@pytest.fixture
async def pg(postgres_url: str):  # type: ignore[no-untyped-def]
    database = Database(postgres_url)
    await upgrade_to_head(database)
    yield database
    await database.close()


async def count(db: Database, model) -> int:  # type: ignore[no-untyped-def]
    async with db.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)))


async def test_one_leader_at_a_time_and_a_release_hands_over_at_once(pg):
    first, second = lease(pg, seconds=5), lease(pg, seconds=5)
    await asyncio.wait_for(first.acquire(), 5)
    assert first.epoch == 1 and first.held()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(1.0)
    assert not waiting.done()  # the standby waits while the lease is renewed
    keeper = asyncio.create_task(first.keep())
    await asyncio.sleep(0.5)
    assert not waiting.done()
    keeper.cancel()
    released = time.monotonic()
    await first.release()
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - released < 1.5  # not the rest of the 5 s lease
    assert second.epoch == 2


async def test_a_lapsed_lease_is_taken_over_and_fences_the_old_leaders_writes(pg):
    old, new = lease(pg), lease(pg)
    await old.acquire()
    ledger = EventLedger(pg, ACCOUNT)
    ledger.fence = old.fence
    assert await ledger.claim("$before", "!room:x")
    await ledger.save_sync_token("s1")

    # The old leader is "paused": no heartbeat. The standby takes over once the lease ran out.
    started = time.monotonic()
    await asyncio.wait_for(new.acquire(), 5)
    assert 1.5 < time.monotonic() - started < 3.5
    assert new.epoch == old.epoch + 1

    # Its own clock tells the old leader the lease is gone: nothing is written.
    assert not old.held()
    with pytest.raises(LeaseLost):
        await ledger.claim("$after", "!room:x")
    # Even when its clock lies (say it ran slow), the database refuses its epoch.
    old._valid_until = time.monotonic() + 60
    with pytest.raises(LeaseLost):
        await ledger.claim("$after", "!room:x")
    old._valid_until = time.monotonic() + 60
    with pytest.raises(LeaseLost):
        await ledger.save_sync_token("s0-stale")
    assert await count(pg, HandledEvent) == 1
    async with pg.engine.connect() as conn:
        assert await conn.scalar(select(SyncState.next_batch)) == "s1"

    # The new leader's writes go through.
    ledger.fence = new.fence
    assert await ledger.claim("$after", "!room:x")
    # And the old one cannot renew its way back.
    old._valid_until = time.monotonic() + 60
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(old.keep(), 5)


async def test_a_leader_frozen_inside_a_claim_does_not_block_the_take_over(pg):
    """Frozen between the fence and the commit, the old leader holds a lock on the lease row
    and on the event it claims: PostgreSQL ends its session, the standby takes over, claims
    the event itself, and the old leader's claim is gone."""
    old_db = Database(pg.url)  # the old leader's process: its lease set up before connecting
    old, new = lease(old_db), lease(pg)
    await old.acquire()
    frozen = await old_db.engine.connect()
    transaction = await frozen.begin()
    await old.fence(frozen)  # FOR SHARE on the lease row
    await frozen.execute(
        HandledEvent.__table__.insert().values(
            event_id="$claimed", room_id="!room:x", handled_at=utcnow()
        )
    )
    started = time.monotonic()
    await asyncio.wait_for(new.acquire(), 10)  # not blocked for as long as the freeze lasts
    assert time.monotonic() - started < 4
    ledger = EventLedger(pg, ACCOUNT)
    ledger.fence = new.fence
    assert await asyncio.wait_for(ledger.claim("$claimed", "!room:x"), 5)
    with pytest.raises(DBAPIError):  # the frozen one wakes up: its session was ended
        await transaction.commit()
    with contextlib.suppress(Exception):
        await frozen.close()
    await old_db.close()


async def test_a_leader_paused_past_its_lease_stops_before_sending(pg):
    leader = lease(pg)
    await leader.acquire()
    leader.ensure_held("sending")  # fine while fresh
    await asyncio.sleep(2.1)  # as if SIGSTOPped: the monotonic clock ran on
    with pytest.raises(LeaseLost):
        leader.ensure_held("sending")


async def test_sqlite_has_no_lease(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    try:
        await upgrade_to_head(db)
        single = lease(db)
        await asyncio.wait_for(single.acquire(), 1)
        assert not single.enabled and single.held() and single.epoch is None
        await single.release()
    finally:
        await db.close()


async def test_two_processes_starting_together_on_a_new_database_both_come_up(postgres_url):
    """Both nodes of a pair started at once (or upgraded at once) change the schema one after
    the other: the second finds the tables made, instead of failing on them."""
    first, second = Database(postgres_url), Database(postgres_url)
    try:
        results = await asyncio.gather(upgrade_to_head(first), upgrade_to_head(second))
        assert sorted(before is None for before, _ in results) == [False, True]
        assert results[0][1] == results[1][1]
    finally:
        await first.close()
        await second.close()
