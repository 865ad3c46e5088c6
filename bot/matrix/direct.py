"""Direct-message rooms: recognising them, and finding or opening one to reach a user. A room is a
DM with someone only if the bot recorded it as one (an is_direct invite, or a room it opened) or it
is a private room holding just the two of them: a public room never is, whatever its size."""

from __future__ import annotations

import time
from typing import Any

import structlog
from nio import AsyncClient, MatrixRoom, RoomCreateResponse, RoomPreset

from bot.store.direct_rooms import DirectRooms

log = structlog.get_logger(__name__)

JOIN_GRACE_S = 2.0


class DirectMessenger:
    def __init__(self, client: AsyncClient, rooms: DirectRooms, *, encryption: bool) -> None:
        self._client = client
        self._rooms = rooms
        self._encryption = encryption
        self._opened: set[str] = set()  # created here; the next sync has not shown them yet
        self._joins_seen: dict[tuple[str, str], float] = {}

    @staticmethod
    def _private_pair(room: MatrixRoom, mxid: str) -> bool:
        return (
            room.member_count <= 2
            and (mxid in room.users or mxid in room.invited_users)
            and room.join_rule not in ("public", "knock")
            and room.history_visibility != "world_readable"
        )

    def is_direct(self, room_id: str, sender: str) -> bool:
        room = self._client.rooms.get(room_id)
        return room is not None and self._private_pair(room, sender)

    def awaiting_join(self, room_id: str, mxid: str) -> bool:
        """An encrypted room where `mxid` is only invited: their devices get the room key only
        once they join, so a message sent now would be unreadable to them. Just after they join,
        their client still needs a moment to fetch the bot's device keys: wait a little more."""
        room = self._client.rooms.get(room_id)
        if room is None:
            return room_id in self._opened and self._encryption
        if not room.encrypted:
            return False
        if mxid in room.invited_users or mxid not in room.users:
            return True
        if room_id not in self._opened:
            return False  # a room they were in before: no fresh join to wait for
        seen = self._joins_seen.setdefault((room_id, mxid), time.monotonic())
        return time.monotonic() - seen < JOIN_GRACE_S

    async def remember(self, mxid: str, room_id: str) -> None:
        await self._rooms.put(mxid, room_id)

    def _usable(self, room_id: str, mxid: str) -> bool:
        if room_id in self._opened:
            return True
        room = self._client.rooms.get(room_id)
        return room is not None and self._private_pair(room, mxid)

    async def room_for(self, mxid: str, *, current: str | None = None) -> str:
        """The DM room with `mxid`: the recorded one, else `current` when it is a private room of
        the two of them, else a new one (they are invited)."""
        known = await self._rooms.get(mxid)
        if known and self._usable(known, mxid):
            return known
        if current is not None and self._usable(current, mxid):
            await self._rooms.put(mxid, current)
            return current
        initial_state: list[dict[str, Any]] = []
        if self._encryption:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        response = await self._client.room_create(
            is_direct=True,
            preset=RoomPreset.trusted_private_chat,
            invite=[mxid],
            initial_state=initial_state,
        )
        if not isinstance(response, RoomCreateResponse):
            raise RuntimeError(f"could not open a DM with {mxid}: {response.message}")
        await self._rooms.put(mxid, response.room_id)
        self._opened.add(response.room_id)
        log.info("matrix.dm_opened", room_id=response.room_id, user_id=mxid)
        return response.room_id
