"""The group-gated rooms service (bot/community/access_service.py) with the real store (SQLite)
and a scripted Matrix side: what it reads, what it does, what it tells whom."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.community.access import GatedRoom, Presence, RoomState
from bot.community.access_service import REMOVAL_REASON, AccessService
from bot.community.moderation import RoomActionError, RoomActionUnavailable
from bot.community.roles import Role
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import AuditEntry, Identity, OutboxMessage, User, utcnow

BOT, ADMIN_ROOM = "@bot:x", "!admins:x"
STAFF = GatedRoom("#staff:x", groups=frozenset({"staff"}))
MODS = GatedRoom("!mods:x", roles=frozenset({Role.MODERATOR, Role.ADMIN}))


class FakeRooms:
    """Rooms as plain data; records what the service asked for."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, Presence]] = {
            "!staff:x": {BOT: Presence("join", 100)},
            "!mods:x": {BOT: Presence("join", 100)},
        }
        self.bot_power = {"!staff:x": 100, "!mods:x": 100}
        self.done: list[tuple[str, str, str]] = []
        self.fail_with: Exception | None = None

    async def resolve(self, room: str) -> str:
        if room == "#staff:x":
            return "!staff:x"
        if room.startswith("!"):
            return room
        raise RoomActionError(f"There is no room {room}.")

    async def look(self, room_id: str, members: Collection[str] | None = None) -> RoomState:
        everyone = self.members[room_id]
        shown = everyone if members is None else {m: everyone[m] for m in members if m in everyone}
        return RoomState(room_id, room_id[1:5], {BOT: everyone[BOT], **shown}, True,
                         self.bot_power[room_id])  # fmt: skip

    async def invite(self, room_id: str, mxid: str) -> None:
        if self.fail_with:
            raise self.fail_with
        self.done.append(("invite", room_id, mxid))
        self.members[room_id][mxid] = Presence("invite")

    async def remove(self, room_id: str, mxid: str, reason: str) -> None:
        if self.fail_with:
            raise self.fail_with
        self.done.append(("remove", room_id, mxid))
        self.members[room_id][mxid] = Presence("leave")


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await upgrade_to_head(database)
    yield database
    await database.close()


async def bind(db: Database, mxid: str, groups: list[str], *, role: str = "user",
               stale: bool = False, provider: str = "test") -> None:  # fmt: skip
    async with db.transaction() as session:
        if await session.get(User, mxid) is None:
            session.add(User(mxid=mxid, role=role, active=True))
        session.add(Identity(
            provider=provider, issuer=f"https://{provider}.test", subject=f"sub-{mxid}",
            mxid=mxid, groups=groups, stale_at=utcnow() if stale else None,
        ))  # fmt: skip


def service(db: Database, rooms: FakeRooms, clock: list[float] | None = None) -> AccessService:
    ticks = clock if clock is not None else [0.0]
    return AccessService(db, [STAFF, MODS], rooms, admins=["@root:x"], bot_user_id=BOT,
                         admin_room_id=ADMIN_ROOM, clock=lambda: ticks[0])  # fmt: skip


async def rows(db: Database, model):  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        return list(await session.scalars(select(model)))


async def test_standing_counts_only_confirmed_bindings(db):
    await bind(db, "@ann:x", ["staff"])
    await bind(db, "@ann:x", ["board"], stale=True, provider="other")
    who = (await service(db, FakeRooms()).standings(["@ann:x"]))["@ann:x"]
    assert who.groups == frozenset({"staff"}) and who.role is Role.USER


async def test_a_member_is_invited_then_removed_with_audit_and_a_dm(db):
    rooms = FakeRooms()
    access = service(db, rooms)
    await bind(db, "@ann:x", ["staff"])
    await access.apply_for("@ann:x")
    assert rooms.done == [("invite", "!staff:x", "@ann:x")]

    async with db.transaction() as session:
        row = await session.scalar(select(Identity).where(Identity.mxid == "@ann:x"))
        row.groups = ["devs"]
    await access.apply_for("@ann:x")
    assert rooms.done[-1] == ("remove", "!staff:x", "@ann:x")
    audit = [(a.actor, a.action, a.target, a.room_id) for a in await rows(db, AuditEntry)]
    assert audit == [
        ("community-bot", "access.invite", "@ann:x", "!staff:x"),
        ("community-bot", "access.remove", "@ann:x", "!staff:x"),
    ]
    [dm] = [m for m in await rows(db, OutboxMessage) if m.recipient == "@ann:x"]
    assert dm.body.startswith("I withdrew your invitation to **staf**")
    assert "`!login`" in dm.body
    assert (await rows(db, AuditEntry))[-1].reason == REMOVAL_REASON


async def test_trouble_is_told_in_the_admin_room_at_most_once_an_hour_per_room(db):
    rooms = FakeRooms()
    rooms.bot_power["!staff:x"] = 10  # too weak to kick
    clock = [0.0]
    access = service(db, rooms, clock)
    for mxid in ("@a:x", "@b:x"):
        rooms.members["!staff:x"][mxid] = Presence("join")
        await access.apply_for(mxid)
    notices = [m for m in await rows(db, OutboxMessage) if m.room_id == ADMIN_ROOM]
    assert len(notices) == 1
    assert "@a:x" in notices[0].body.replace("\\", "") and "lack the power" in notices[0].body
    clock[0] = timedelta(hours=1).total_seconds()
    await access.apply_for("@b:x")
    assert len([m for m in await rows(db, OutboxMessage) if m.room_id == ADMIN_ROOM]) == 2
    assert rooms.done == []


async def test_a_homeserver_that_does_not_answer_makes_the_row_try_again(db):
    rooms = FakeRooms()
    rooms.fail_with = RoomActionUnavailable("staff: the homeserver did not answer.")
    await bind(db, "@ann:x", ["staff"])
    with pytest.raises(RoomActionUnavailable):
        await service(db, rooms).apply_for("@ann:x")
    assert not [m for m in await rows(db, OutboxMessage) if m.room_id == ADMIN_ROOM]
    rooms.fail_with = None
    await service(db, rooms).apply_for("@ann:x")
    assert rooms.done == [("invite", "!staff:x", "@ann:x")]


async def test_sync_brings_every_room_in_line_as_the_admin(db):
    rooms = FakeRooms()
    await bind(db, "@ann:x", ["staff"])
    await bind(db, "@mod:x", [], role="moderator")
    rooms.members["!staff:x"]["@bob:x"] = Presence("join")
    rooms.members["!mods:x"]["@peer:x"] = Presence("join", 100)
    access = service(db, rooms)
    preview = await access.plan_all()
    assert [(p.invite, p.remove) for p in preview] == [
        (("@ann:x",), ("@bob:x",)),
        (("@mod:x", "@root:x"), ()),
    ]
    assert rooms.done == []
    applied = await access.sync("@root:x")
    assert sorted(rooms.done) == [
        ("invite", "!mods:x", "@mod:x"), ("invite", "!mods:x", "@root:x"),
        ("invite", "!staff:x", "@ann:x"), ("remove", "!staff:x", "@bob:x"),
    ]  # fmt: skip
    assert applied[1].plan.held[0].member == "@peer:x"
    assert {a.actor for a in await rows(db, AuditEntry)} == {"@root:x"}


async def test_a_room_that_cannot_be_resolved_is_a_problem_not_a_crash(db):
    rooms = FakeRooms()
    access = AccessService(db, [GatedRoom("#nowhere:x", frozenset({"a"}))], rooms,
                           admins=[], bot_user_id=BOT)  # fmt: skip
    [plan] = await access.plan_all()
    assert plan.problem == "There is no room #nowhere:x." and not plan.transient
