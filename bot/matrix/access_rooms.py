"""The Matrix side of group-gated rooms (bot/community/access_service.py): configured rooms
resolved to ids, who is in them and with what power, read fresh from the homeserver; invites and
removals. All requests go through MatrixRoomActions (room_actions.py), which waits out rate limits.

Power follows the Matrix authorization rules: `m.room.power_levels` (`users`, `users_default`,
`invite` 0 and `kick` 50 by default); without it the room's creator has 100; in room versions with
privileged creators (12) the creators (the create event's sender and `additional_creators`) stand
above every level. Removing someone needs the kick level and a power level above theirs.

Looking at one member reads three small state events (power levels, the bot's and the member's
membership); the room's create event (who created it, its version) never changes and is read once,
with the first full look."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from bot.community.access import JOIN, LEAVE, Presence, RoomState
from bot.community.moderation import RoomActionError, RoomActionUnavailable
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.room_actions import MatrixRoomActions

CREATOR_POWER = 2**53  # privileged creators: above any level a power_levels event can give
PRIVILEGED_CREATOR_VERSIONS = frozenset({"12", "org.matrix.hydra.11"})
DEFAULT_KICK, DEFAULT_INVITE = 50, 0


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def _privileged_creators(version: str) -> bool:
    return version in PRIVILEGED_CREATOR_VERSIONS or (version.isdigit() and int(version) >= 12)


class PowerRules:
    """Power levels in one room, from its create and power_levels events."""

    def __init__(self, create: Mapping[str, Any] | None, levels: Mapping[str, Any] | None) -> None:
        content = (create or {}).get("content") or {}
        sender = (create or {}).get("sender")
        self._version = str(content.get("room_version", "1"))
        creator = content.get("creator", sender)  # v1-10 name it; from v11 it is the sender
        self._creator = creator if isinstance(creator, str) else None
        extra = content.get("additional_creators")
        self._creators = {sender, *(extra if isinstance(extra, list) else ())} - {None}
        self._levels = levels
        users = (levels or {}).get("users")
        self._users: Mapping[str, Any] = users if isinstance(users, dict) else {}

    def level(self, mxid: str) -> int:
        if _privileged_creators(self._version) and mxid in self._creators:
            return CREATOR_POWER
        if self._levels is None:
            return 100 if mxid == self._creator else 0
        default = _int(self._levels.get("users_default"), 0)
        return _int(self._users.get(mxid), default) if mxid in self._users else default

    def needed(self, action: str) -> int:
        default = DEFAULT_KICK if action == "kick" else DEFAULT_INVITE
        return default if self._levels is None else _int(self._levels.get(action), default)


def room_state(
    room_id: str,
    name: str,
    me: str,
    events: Iterable[Mapping[str, Any]],
    *,
    asked: Collection[str] | None = None,
) -> RoomState:
    """A RoomState from state events (the homeserver's format). `asked`: only these members
    (None: everyone the state names)."""
    create = levels = None
    members: dict[str, Mapping[str, Any]] = {}
    for event in events:
        kind, key = event.get("type"), event.get("state_key")
        if kind == "m.room.create" and key == "":
            create = event
        elif kind == "m.room.power_levels" and key == "":
            levels = event.get("content") if isinstance(event.get("content"), dict) else {}
        elif kind == "m.room.member" and isinstance(key, str):
            members[key] = event
    rules = PowerRules(create, levels)
    presence: dict[str, Presence] = {}
    for mxid, event in members.items():
        if asked is not None and mxid not in asked and mxid != me:
            continue
        content = event.get("content") if isinstance(event.get("content"), dict) else {}
        membership = content.get("membership")
        if not isinstance(membership, str):
            continue
        by_themselves = membership == LEAVE and event.get("sender") == mxid
        presence[mxid] = Presence(membership, rules.level(mxid), by_themselves)
    mine = presence.get(me)
    return RoomState(
        room_id, name, presence, bot_joined=mine is not None and mine.membership == JOIN,
        bot_power=rules.level(me), invite_level=rules.needed("invite"),
        kick_level=rules.needed("kick"),
    )  # fmt: skip


class MatrixGatedRooms:
    """access_service.GatedRoomsPort on the Matrix client."""

    def __init__(self, actions: MatrixRoomActions, bot_user_id: str) -> None:
        self._actions = actions
        self._me = bot_user_id
        self._ids: dict[str, str] = {}  # alias -> room id, once resolved
        self._creates: dict[str, Mapping[str, Any]] = {}  # room id -> its create event

    async def resolve(self, room: str) -> str:
        if room.startswith("!"):
            return room
        if room not in self._ids:
            try:
                self._ids[room] = await self._actions.resolve(room)
            except CONNECT_ERRORS as problem:
                raise RoomActionUnavailable(
                    f"{room}: the homeserver did not answer ({problem})."
                ) from None
        return self._ids[room]

    async def look(self, room_id: str, members: Collection[str] | None = None) -> RoomState:
        name = self._actions.room_name(room_id)
        try:
            events = await self._events(room_id, members)
        except RoomActionUnavailable:
            raise
        except RoomActionError:
            # The homeserver shows a room's state only to those who are (or were) in it.
            raise RoomActionError(f"{name}: I am not in that room.") from None
        return room_state(room_id, name, self._me, events, asked=members)

    async def _events(
        self, room_id: str, members: Collection[str] | None
    ) -> list[Mapping[str, Any]]:
        if members is None or room_id not in self._creates:
            events = await self._actions.room_state(room_id)
            for event in events:
                if event.get("type") == "m.room.create" and event.get("state_key") == "":
                    self._creates[room_id] = event
            return events
        events: list[Mapping[str, Any]] = [self._creates[room_id]]
        if (
            levels := await self._actions.state_content(room_id, "m.room.power_levels")
        ) is not None:
            events.append({"type": "m.room.power_levels", "state_key": "", "content": levels})
        for mxid in dict.fromkeys([self._me, *members]):
            content = await self._actions.state_content(room_id, "m.room.member", mxid)
            if content is not None:  # no sender here: whether they left by themselves is unknown
                events.append({"type": "m.room.member", "state_key": mxid, "content": content})
        return events

    async def invite(self, room_id: str, mxid: str) -> None:
        await self._actions.send_invite(room_id, mxid)

    async def remove(self, room_id: str, mxid: str, reason: str) -> None:
        await self._actions.remove(room_id, mxid, reason)
