"""Direct-message rooms: recognising them, and finding or opening one to reach a user."""

from __future__ import annotations

from typing import Any

import structlog
from nio import AsyncClient, RoomCreateResponse, RoomPreset

from bot.store.direct_rooms import DirectRooms

log = structlog.get_logger(__name__)


class DirectMessenger:
    def __init__(self, client: AsyncClient, rooms: DirectRooms, *, encryption: bool) -> None:
        self._client = client
        self._rooms = rooms
        self._encryption = encryption
        self._opened: set[str] = set()  # created here; the next sync has not shown them yet

    def is_direct(self, room_id: str) -> bool:
        """A room with only the bot and one other member (joined or invited) is a DM."""
        room = self._client.rooms.get(room_id)
        return room is not None and room.member_count <= 2

    async def remember(self, mxid: str, room_id: str) -> None:
        await self._rooms.put(mxid, room_id)

    def _still_usable(self, room_id: str, mxid: str) -> bool:
        room = self._client.rooms.get(room_id)
        if room is None:
            return False
        return (mxid in room.users or mxid in room.invited_users) and room.member_count <= 2

    async def room_for(self, mxid: str) -> str:
        """The DM room with `mxid`, creating (and inviting them to) one when there is none."""
        known = await self._rooms.get(mxid)
        if known and (known in self._opened or self._still_usable(known, mxid)):
            return known
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
