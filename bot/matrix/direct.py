"""Direct-message rooms: recognising them, and finding or opening one to reach a user. What counts
as a DM is defined once, in room_kinds.py: an invite-only room of just the bot and the member."""

from __future__ import annotations

import time
from typing import Any

import structlog
from nio import AsyncClient, MatrixRoom, RoomCreateResponse, RoomPreset

from bot.lru import LRUDict
from bot.matrix.room_kinds import is_private_pair
from bot.store.direct_rooms import DirectRooms

log = structlog.get_logger(__name__)

JOIN_GRACE_S = 2.0


class DirectMessenger:
    def __init__(self, client: AsyncClient, rooms: DirectRooms, *, encryption: bool) -> None:
        self._client = client
        self._rooms = rooms
        self._encryption = encryption
        self._opened: set[str] = set()  # created here; the next sync has not shown them yet
        self._joins_seen: LRUDict[tuple[str, str], float] = LRUDict(10_000)

    def _private_pair(self, room: MatrixRoom, mxid: str) -> bool:
        return is_private_pair(room, self._client.user_id, mxid)

    def is_direct(self, room_id: str, sender: str) -> bool:
        room = self._client.rooms.get(room_id)
        return room is not None and self._private_pair(room, sender)

    def send_delay(self, room_id: str, mxid: str) -> float | None:
        """How long to wait before a message to `mxid` in this room is readable for them: 0 now,
        None while they have not joined. In an encrypted room where they are only invited their
        devices get the room key only once they join; just after they join, their client still
        needs a moment to fetch the bot's device keys (JOIN_GRACE_S)."""
        room = self._client.rooms.get(room_id)
        if room is None:
            return None if room_id in self._opened and self._encryption else 0.0
        if not room.encrypted:
            return 0.0
        if mxid in room.invited_users or mxid not in room.users:
            return None
        if room_id not in self._opened:
            return 0.0  # a room they were in before: no fresh join to wait for
        seen = self._joins_seen.get((room_id, mxid))
        if seen is None:
            self._joins_seen[(room_id, mxid)] = seen = time.monotonic()
        return max(0.0, JOIN_GRACE_S - (time.monotonic() - seen))

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
