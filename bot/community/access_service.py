"""Group-gated rooms, applied: reads members' standing from the store (groups of confirmed
bindings, roles), asks the Matrix side (a GatedRoomsPort, bot/matrix/access_rooms.py) who is in
each governed room, plans with access.py, and acts — invites, removals (a kick with the reason,
never a ban), each audited, each removed member told why by DM through the outbox.

Three ways in:
- `apply_for(mxid)`: the outbox's ACCESS row for one member (they linked, their groups or role
  changed). Only that member is invited or removed. Rooms that cannot be managed are reported in
  the admin room, at most once per room per NOTICE_EVERY; a homeserver that does not answer
  makes it raise, so the row is tried again (planning again against the room as it is then).
- `check(mxid)`: what one member's rooms should be and are; nothing changes.
- `plan_all()` / `sync(actor)`: every governed room against everyone: members who belong are
  invited (not those who left or declined by themselves), everyone joined or invited who does not
  belong is removed, except the bot and those whose power level is not below the bot's."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import structlog
from sqlalchemy import select

from bot.community.access import (
    INVITE,
    GatedRoom,
    Held,
    RoomPlan,
    RoomState,
    Standing,
    Standings,
    plan_room,
    unreachable,
)
from bot.community.audit import add_entry
from bot.community.markdown import escape_markdown
from bot.community.moderation import RoomActionError, RoomActionUnavailable
from bot.community.outbox import SYSTEM_ACTOR, Outbox, enqueue
from bot.community.roles import Role
from bot.durations import compact_duration
from bot.store.database import Database
from bot.store.models import Identity, User

log = structlog.get_logger(__name__)

NOTICE_EVERY = timedelta(hours=1)  # admin-room notices about one room, at most this often
# Shown in the room's timeline to everyone: no personal data.
REMOVAL_REASON = "Access to this room follows community groups and roles"


class GatedRoomsPort(Protocol):
    """What the service needs from Matrix. Raise RoomActionError when the answer is no (no such
    room, not allowed) and RoomActionUnavailable when it may be yes later."""

    async def resolve(self, room: str) -> str: ...
    async def look(self, room_id: str, members: Collection[str] | None = None) -> RoomState: ...
    async def invite(self, room_id: str, mxid: str) -> None: ...
    async def remove(self, room_id: str, mxid: str, reason: str) -> None: ...


@dataclass(frozen=True)
class Applied:
    """One room's plan, carried out: who was invited and removed, what failed (and why)."""

    plan: RoomPlan
    invited: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    failed: tuple[Held, ...] = ()
    again_later: bool = False  # something failed that may work when tried again

    @property
    def troubled(self) -> bool:
        return self.plan.troubled or bool(self.failed)


def removal_message(room_name: str, was_invited: bool, login_command: str) -> str:
    what = "withdrew your invitation to" if was_invited else "removed you from"
    return (
        f"I {what} **{escape_markdown(room_name)}**: it is only for members with certain "
        "community groups or roles, and your community account no longer has one of them. "
        f"If you think that is wrong, ask a moderator (or log in again with `{login_command}` if "
        "your account has changed); when you have access again, I will invite you back."
    )


def trouble_lines(applied: Iterable[Applied], limit: int = 5) -> list[str]:
    """Markdown lines, one per room that could not be managed fully (for the admin room)."""
    lines = []
    for a in applied:
        if not a.troubled:
            continue
        name = escape_markdown(a.plan.name)
        if a.plan.problem is not None:
            lines.append(f"- **{name}**: {escape_markdown(a.plan.problem)}")
            continue
        problems = [*a.plan.held, *a.failed]
        shown = "; ".join(
            f"{escape_markdown(h.member)}: {escape_markdown(h.why)}" for h in problems[:limit]
        )
        more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
        lines.append(f"- **{name}**: {shown}{more}")
    return lines


class AccessService:
    def __init__(
        self,
        db: Database,
        rooms: Sequence[GatedRoom],
        port: GatedRoomsPort,
        *,
        admins: Iterable[str],
        bot_user_id: str,
        admin_room_id: str | None = None,
        command_prefix: str = "!",
        notice_every: timedelta = NOTICE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self.rooms = tuple(rooms)
        self._port = port
        self._admins = frozenset(admins)
        self._bot = bot_user_id
        self.admin_room_id = admin_room_id  # where trouble is reported
        self._prefix = command_prefix
        self._notice_every_s = notice_every.total_seconds()
        self._clock = clock
        self._noticed: dict[str, float] = {}  # configured room -> when the admin room was told
        self._outbox = Outbox(db)

    @property
    def configured(self) -> bool:
        return bool(self.rooms)

    async def standings(self, mxids: Collection[str] | None = None) -> Standings:
        """Roles from the store, groups from confirmed bindings only (a stale one gives none)."""
        users = select(User.mxid, User.role)
        bindings = select(Identity.mxid, Identity.groups).where(Identity.stale_at.is_(None))
        if mxids is not None:
            users = users.where(User.mxid.in_(mxids))
            bindings = bindings.where(Identity.mxid.in_(mxids))
        async with self._db.transaction() as session:
            roles = {mxid: role for mxid, role in await session.execute(users)}
            groups: dict[str, set[str]] = {}
            for mxid, listed in await session.execute(bindings):
                groups.setdefault(mxid, set()).update(str(g) for g in listed or ())
        known = {
            mxid: Standing(mxid, frozenset(groups.get(mxid, ())), _role(roles.get(mxid)))
            for mxid in roles.keys() | groups.keys()
        }
        return Standings(known, self._admins)

    async def _plans(self, standings: Standings, member: str | None) -> list[RoomPlan]:
        plans = []
        for room in self.rooms:
            room_id = None
            try:
                room_id = await self._port.resolve(room.room)
                state = await self._port.look(room_id, None if member is None else [member])
            except RoomActionError as problem:
                transient = isinstance(problem, RoomActionUnavailable)
                plans.append(unreachable(room, str(problem), room_id, transient=transient))
                continue
            if not state.bot_joined:
                plans.append(unreachable(room, f"I am not in {room.room}.", room_id))
                continue
            invitees = [member] if member is not None else standings.members()
            plans.append(
                plan_room(
                    room, state, standings, bot_user_id=self._bot, invitees=invitees,
                    removable=None if member is None else [member],
                    invite_leavers=member is not None,
                )
            )  # fmt: skip
        return plans

    async def check(self, mxid: str) -> tuple[Standing, list[RoomPlan]]:
        """One member's standing, and per governed room what applying it would do."""
        standings = await self.standings([mxid])
        return standings[mxid], await self._plans(standings, mxid)

    async def plan_all(self) -> list[RoomPlan]:
        """What `sync` would do; nothing changes."""
        return await self._plans(await self.standings(), None)

    async def sync(self, actor: str) -> list[Applied]:
        """Every governed room brought in line with everyone's standing; audited as `actor`."""
        plans = await self.plan_all()
        applied = [await self._apply(plan, actor, trigger="sync") for plan in plans]
        log.info("access.synced", actor=actor, invited=sum(len(a.invited) for a in applied),
                 removed=sum(len(a.removed) for a in applied),
                 troubled=sum(a.troubled for a in applied))  # fmt: skip
        return applied

    async def apply_for(self, mxid: str) -> list[Applied]:
        """The outbox's ACCESS row: `mxid`'s governed rooms brought up to date. Rooms that cannot
        be managed are reported in the admin room; raises RoomActionUnavailable when something
        must be tried again (the caller retries the whole row: planning is done afresh)."""
        if not self.configured:
            return []
        standings = await self.standings([mxid])
        plans = await self._plans(standings, mxid)
        applied = [await self._apply(plan, SYSTEM_ACTOR, trigger="member") for plan in plans]
        await self._report(applied, mxid)
        log.info("access.applied", mxid=mxid, invited=sum(len(a.invited) for a in applied),
                 removed=sum(len(a.removed) for a in applied))  # fmt: skip
        if any(a.again_later for a in applied):
            raise RoomActionUnavailable("the homeserver did not answer for every governed room")
        return applied

    async def _apply(self, plan: RoomPlan, actor: str, *, trigger: str) -> Applied:
        """Removals first, then invites; each one done is audited (a removal with its DM) in
        its own transaction, each one refused is kept with the homeserver's words."""
        if plan.problem is not None or plan.room_id is None:
            return Applied(plan, again_later=plan.transient)
        done: dict[str, list[str]] = {"remove": [], "invite": []}
        failed: list[Held] = []
        later = False
        for act, members in (("remove", plan.remove), ("invite", plan.invite)):
            for mxid in members:
                try:
                    await self._act(plan, act, mxid)
                except RoomActionError as problem:
                    later = later or isinstance(problem, RoomActionUnavailable)
                    failed.append(Held(mxid, str(problem)))
                    continue
                await self._record(plan, act, mxid, actor, trigger)
                done[act].append(mxid)
        return Applied(plan, tuple(done["invite"]), tuple(done["remove"]), tuple(failed), later)

    async def _act(self, plan: RoomPlan, act: str, mxid: str) -> None:
        assert plan.room_id is not None
        if act == "remove":
            await self._port.remove(plan.room_id, mxid, REMOVAL_REASON)
        else:
            await self._port.invite(plan.room_id, mxid)

    async def _record(self, plan: RoomPlan, act: str, mxid: str, actor: str, trigger: str) -> None:
        async with self._db.transaction() as session:
            add_entry(
                session, actor=actor, action=f"access.{act}", target=mxid, room_id=plan.room_id,
                reason=REMOVAL_REASON if act == "remove" else None,
                detail={"room": plan.room.room, "trigger": trigger},
            )  # fmt: skip
            if act == "remove":
                was_invited = plan.states.get(mxid) == INVITE
                text = removal_message(plan.name, was_invited, f"{self._prefix}login")
                enqueue(session, text, recipient=mxid)

    async def _report(self, applied: list[Applied], mxid: str) -> None:
        """Rooms that could not be fully managed: logged always, and said in the admin room at
        most once per room per NOTICE_EVERY, so a room without power does not flood it."""
        troubled = [a for a in applied if a.troubled and not a.again_later]
        if not troubled:
            return
        now = self._clock()
        due = [
            a for a in troubled
            if now - self._noticed.get(a.plan.room.room, float("-inf")) >= self._notice_every_s
        ]  # fmt: skip
        for a in troubled:
            log.warning("access.room_trouble", room=a.plan.room.room, room_id=a.plan.room_id,
                        problems=len(a.plan.held) + len(a.failed) + (a.plan.problem is not None),
                        noticed=a in due)  # fmt: skip
        if not due or self.admin_room_id is None:
            return
        for a in due:
            self._noticed[a.plan.room.room] = now
        every = compact_duration(timedelta(seconds=self._notice_every_s))
        text = "\n\n".join([
            f"⚠️ Group-gated rooms: I could not bring the rooms of {escape_markdown(mxid)} fully up "
            "to date (give me the power there, or check `[[access.rooms]]`):",
            "\n".join(trouble_lines(due)),
            f"_I say this at most once per room every {every}; `{self._prefix}access check "
            "@member` shows one member's rooms._",
        ])  # fmt: skip
        await self._outbox.put(text, room_id=self.admin_room_id)


def _role(label: str | None) -> Role:
    try:
        return Role.parse(label or "user")
    except ValueError:
        return Role.USER
