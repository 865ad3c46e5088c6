"""Greeting newcomers: each (room, member) once, several joins in one message, names escaped and
mentions real, a login hint for those not linked yet, and one reminder later."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from bot.community.audit import add_entry
from bot.community.identity import IdentityService
from bot.community.markdown import escape_markdown, mention
from bot.store.database import Database
from bot.store.models import Identity, Newcomer, RoomSettings, Welcomed, utcnow
from bot.store.upsert import insert_ignore


@dataclass(frozen=True)
class Joiner:
    mxid: str
    display_name: str | None


@dataclass(frozen=True)
class RoomWelcome:
    enabled: bool
    template: str
    overridden: frozenset[str]


@dataclass(frozen=True)
class Greeting:
    markdown: str
    mentions: tuple[str, ...]
    unlinked: tuple[str, ...]  # who should get a login link by DM


PLACEHOLDERS = ("name", "mention", "room", "login_hint")


def template_problem(template: str) -> str | None:
    """Why a welcome template cannot be used, or None. Only plain placeholders are allowed: a
    format spec such as {name:>999999999} would build a giant string."""
    import string

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as problem:
        return f"it is not a valid template ({problem})"
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            return f"{{{field}}} is not a placeholder: use " + ", ".join(
                f"{{{p}}}" for p in PLACEHOLDERS
            )
    return None


def _join_words(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def render_greeting(
    template: str, joiners: Sequence[Joiner], linked: set[str], room_name: str, prefix: str
) -> Greeting:
    unlinked = tuple(j.mxid for j in joiners if j.mxid not in linked)
    if not unlinked:
        hint = ""
    elif len(joiners) == 1:
        hint = f"Send me `{prefix}login` to link your community account."
    else:
        hint = f"If you are new here, send me `{prefix}login` to link your community account."
    text = template.format(
        name=_join_words([escape_markdown(j.display_name or j.mxid) for j in joiners]),
        mention=_join_words([mention(j.mxid, j.display_name) for j in joiners]),
        room=escape_markdown(room_name),
        login_hint=hint,
    )
    return Greeting(text.strip(), tuple(j.mxid for j in joiners), unlinked)


class WelcomeService:
    def __init__(
        self, db: Database, identity: IdentityService, *, rooms: Iterable[str], template: str
    ) -> None:
        self._db = db
        self._identity = identity
        self.rooms = frozenset(rooms)  # room ids, resolved from the config at start
        self._template = template

    async def settings(self, room_id: str) -> RoomWelcome:
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id)
        enabled = room_id in self.rooms
        overridden = set()
        if row is not None and row.welcome_enabled is not None:
            enabled = row.welcome_enabled
            overridden.add("enabled")
        template = self._template
        if row is not None and row.welcome_template:
            template = row.welcome_template
            overridden.add("template")
        return RoomWelcome(enabled, template, frozenset(overridden))

    async def change(self, room_id: str, actor: str, **changes: object) -> None:
        """`enabled` and/or `template` for one room."""
        async with self._db.transaction() as session:
            row = await session.get(RoomSettings, room_id) or RoomSettings(room_id=room_id)
            session.add(row)
            if "enabled" in changes:
                row.welcome_enabled = bool(changes["enabled"])
            if "template" in changes:
                row.welcome_template = str(changes["template"])
            row.updated_by, row.updated_at = actor, utcnow()
            add_entry(session, actor=actor, action="welcome.settings", room_id=room_id,
                      detail={k: str(v)[:200] for k, v in changes.items()})  # fmt: skip

    async def claim(self, room_id: str, mxids: Iterable[str]) -> list[str]:
        """Those of `mxids` not welcomed in this room before, now recorded as welcomed."""
        fresh = []
        async with self._db.transaction() as session:
            for mxid in dict.fromkeys(mxids):
                if await insert_ignore(
                    session, Welcomed, room_id=room_id, mxid=mxid, welcomed_at=utcnow()
                ):
                    fresh.append(mxid)
        return fresh

    async def welcomed_already(self, room_id: str, mxids: Iterable[str]) -> set[str]:
        wanted = list(mxids)
        async with self._db.transaction() as session:
            return set(await session.scalars(
                select(Welcomed.mxid).where(Welcomed.room_id == room_id, Welcomed.mxid.in_(wanted))
            ))  # fmt: skip

    async def linked(self, mxids: Iterable[str]) -> set[str]:
        wanted = list(mxids)
        async with self._db.transaction() as session:
            return set(
                await session.scalars(select(Identity.mxid).where(Identity.mxid.in_(wanted)))
            )

    async def note_newcomers(self, room_id: str, mxids: Iterable[str]) -> None:
        async with self._db.transaction() as session:
            for mxid in mxids:
                await insert_ignore(
                    session, Newcomer, mxid=mxid, room_id=room_id, joined_at=utcnow()
                )

    async def due_reminders(self, after: timedelta) -> list[str]:
        """Newcomers who joined longer than `after` ago, are still unlinked and were not reminded.
        They are marked reminded here: one reminder each, even if sending fails."""
        cutoff = utcnow() - after
        async with self._db.transaction() as session:
            rows = list(await session.scalars(
                select(Newcomer).where(Newcomer.joined_at <= cutoff, Newcomer.reminded_at.is_(None))
            ))  # fmt: skip
            linked = set(await session.scalars(
                select(Identity.mxid).where(Identity.mxid.in_([r.mxid for r in rows]))
            ))  # fmt: skip
            due = []
            for row in rows:
                row.reminded_at = utcnow()
                if row.mxid not in linked:
                    due.append(row.mxid)
            return due
