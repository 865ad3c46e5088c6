"""Kicks, bans, invites and announcements across the community's rooms. The domain decides who may
act on whom; acting in Matrix goes through RoomActions, which bot/matrix implements. A room where
the bot lacks the power is reported and the others still get done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bot.community.audit import add_entry
from bot.community.permissions import Party, check_target
from bot.community.roles import Role
from bot.community.users import UserService
from bot.store.database import Database


class RoomActionError(Exception):
    """Acting in a room failed; `str()` says why, for the moderator."""


class RoomActionUnavailable(RoomActionError):
    """The homeserver did not answer, or kept rate-limiting: the same action may work later."""


class RoomActions(Protocol):
    async def resolve(self, room: str) -> str: ...
    def community_rooms(self) -> list[str]: ...
    def room_name(self, room_id: str) -> str: ...
    async def kick(self, room_id: str, user_id: str, reason: str | None) -> None: ...
    async def ban(self, room_id: str, user_id: str, reason: str | None) -> None: ...
    async def unban(self, room_id: str, user_id: str) -> None: ...
    async def invite(self, room_id: str, user_id: str) -> None: ...
    async def post(self, room_id: str, markdown: str, *, key: str | None = None) -> None: ...


@dataclass(frozen=True)
class RoomOutcome:
    room_id: str
    room_name: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


Sanction = Literal["kick", "ban", "unban"]


class Moderation:
    def __init__(
        self,
        db: Database,
        actions: RoomActions,
        users: UserService,
        bot_user_id: str,
        *,
        admin_room_id: str | None = None,
    ) -> None:
        self._db = db
        self.actions = actions
        self._users = users
        self._bot = bot_user_id
        self._admin_room = admin_room_id

    async def community_room(self, room: str, actor: Party) -> str:
        """A room id a moderator may act in: one of the community rooms the bot is in (never a
        member's DM with the bot), and the admin room only for admins."""
        room_id = await self.actions.resolve(room)
        if room_id == self._admin_room:
            if actor.role < Role.ADMIN:
                raise RoomActionError("Only admins can act in the admin room.")
            return room_id
        if room_id not in self.actions.community_rooms():
            raise RoomActionError(f"{room} is not one of the community rooms I am in.")
        return room_id

    async def _record(self, actor: str, action: str, target: str | None, outcomes: list[RoomOutcome],
                      reason: str | None) -> None:  # fmt: skip
        async with self._db.transaction() as session:
            for outcome in outcomes:
                if outcome.ok:
                    add_entry(session, actor=actor, action=action, target=target,
                              room_id=outcome.room_id, reason=reason)  # fmt: skip

    async def _each_room(self, rooms: list[str], act) -> list[RoomOutcome]:  # type: ignore[no-untyped-def]
        outcomes = []
        for room_id in rooms:
            name = self.actions.room_name(room_id)
            try:
                await act(room_id)
            except RoomActionError as problem:
                outcomes.append(RoomOutcome(room_id, name, str(problem)))
            else:
                outcomes.append(RoomOutcome(room_id, name))
        return outcomes

    async def sanction(
        self, action: Sanction, actor: Party, target: str, rooms: list[str], *, reason: str | None
    ) -> list[RoomOutcome]:
        """Raises permissions.Refused before touching any room."""
        target_party = Party(target, await self._users.role_of(target))
        check_target(actor, target_party, bot_user_id=self._bot, action=action)
        if action == "kick":
            outcomes = await self._each_room(rooms, lambda r: self.actions.kick(r, target, reason))
        elif action == "ban":
            outcomes = await self._each_room(rooms, lambda r: self.actions.ban(r, target, reason))
        else:
            outcomes = await self._each_room(rooms, lambda r: self.actions.unban(r, target))
        await self._record(actor.mxid, action, target, outcomes, reason)
        return outcomes

    async def invite(self, actor: Party, target: str, room: str) -> RoomOutcome:
        room_id = await self.community_room(room, actor)
        [outcome] = await self._each_room([room_id], lambda r: self.actions.invite(r, target))
        await self._record(actor.mxid, "invite", target, [outcome], None)
        return outcome

    async def announce(
        self, actor: str, rooms: list[str], markdown: str, *, key: str | None = None
    ) -> list[RoomOutcome]:
        """`key` (the command's event id) makes a repeat after a restart post nothing twice."""
        outcomes = await self._each_room(
            rooms, lambda r: self.actions.post(r, markdown, key=f"{key}-{r}" if key else None)
        )
        await self._record(actor, "announce", None, outcomes, None)
        return outcomes

    async def rooms_for(
        self, where: str | None, *, every: bool, current: str, current_is_dm: bool, actor: Party
    ) -> list[str]:
        """The rooms a command means: --all, --room, or the room it was sent in."""
        if every:
            return self.actions.community_rooms()
        if where:
            return [await self.community_room(where, actor)]
        if current_is_dm:
            raise RoomActionError(
                "In a direct chat, say which room with --room #room:server, or use --all."
            )
        if current == self._admin_room:
            if actor.role < Role.ADMIN:
                raise RoomActionError("Only admins can act in the admin room.")
        elif current not in self.actions.community_rooms():
            raise RoomActionError(
                "This is not one of the community rooms, so I do not moderate here."
            )
        return [current]
