"""Room upgrades: when a community room is replaced by a newer version (an `m.room.tombstone`
naming a `replacement_room`), the bot joins the replacement and everything the community keeps
about the room follows it — its stored settings (bot/store/room_carry.py), its place among the
community rooms and welcome rooms, schedules aimed at it. Done once per old room (a tombstone
seen again after a restart changes nothing), audited, told to the admin room.

Only community rooms (`followed`, wired to RoomKinds.is_community): an upgraded ban-list room is
not followed — the bot keeps the old room's rules and admins re-subscribe to the new room."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from bot.community.audit import add_entry
from bot.community.markdown import code_span, escape_markdown
from bot.community.moderation import RoomActionError
from bot.store import room_carry
from bot.store.database import Database
from bot.store.models import RoomUpgrade

log = structlog.get_logger(__name__)

# Told of each upgrade (old id, new id) after the store has carried it: the in-memory parts.
Follower = Callable[[str, str], Awaitable[None]]


class UpgradePort(Protocol):
    async def join(self, room: str) -> str: ...
    def room_name(self, room_id: str) -> str: ...
    async def post(self, room_id: str, markdown: str) -> None: ...


class RoomUpgrades:
    def __init__(
        self, db: Database, port: UpgradePort, *, bot_user_id: str,
        followed: Callable[[str], bool], admin_room_id: str | None = None,
    ) -> None:  # fmt: skip
        self._db = db
        self._port = port
        self._bot = bot_user_id
        self._followed = followed  # is this a room whose upgrades we follow?
        self._admin_room = admin_room_id
        self.followers: list[Follower] = []

    async def on_tombstone(self, room_id: str, replacement: object, sender: str) -> str | None:
        """The new room's id when the bot followed the upgrade; None when there was nothing
        to do (not our room, no replacement, already followed) or it failed (reported)."""
        if not isinstance(replacement, str) or not replacement.startswith("!"):
            return None
        if replacement == room_id or not self._followed(room_id):
            return None
        async with self._db.transaction() as session:
            if await session.get(RoomUpgrade, room_id) is not None:
                return None
        name = self._port.room_name(room_id)
        try:
            new_id = await self._port.join(replacement)
        except RoomActionError as problem:
            log.warning("upgrade.join_failed", room_id=room_id, error=str(problem))
            await self._tell(
                f"⚠️ {escape_markdown(name)} was upgraded by {escape_markdown(sender)}, but I "
                f"could not join the new room: {escape_markdown(str(problem))}. Invite me there "
                "and its settings follow."
            )
            return None
        async with self._db.transaction() as session:
            if await session.get(RoomUpgrade, room_id) is not None:
                return None  # followed meanwhile
            carried = await room_carry.carry(session, room_id, new_id)
            session.add(RoomUpgrade(old_room_id=room_id, new_room_id=new_id, carried=carried))
            add_entry(session, actor=sender, action="room.upgrade", target=new_id,
                      room_id=room_id, detail={"carried": carried})  # fmt: skip
        for follower in self.followers:
            try:
                await follower(room_id, new_id)
            except Exception:  # one part failing to follow must not stop the others
                log.exception("upgrade.follower_failed", room_id=room_id)
        log.info("upgrade.followed", room_id=room_id, new_room_id=new_id, carried=carried)
        what = ", ".join(f"{table} ({rows})" for table, rows in carried.items()) or "no settings"
        await self._tell(
            f"⬆️ {escape_markdown(name)} was upgraded by {escape_markdown(sender)}: I joined the "
            f"new room {code_span(new_id)} and carried over {escape_markdown(what)}."
        )
        return new_id

    async def _tell(self, markdown: str) -> None:
        if self._admin_room is None:
            return
        try:
            await self._port.post(self._admin_room, markdown)
        except RoomActionError as problem:
            log.warning("upgrade.admin_room_unreachable", error=str(problem))
