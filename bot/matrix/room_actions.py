"""RoomActions for the moderation domain, on the Matrix client: power is checked against the
room's power levels first, so "I cannot do that here" is said clearly instead of a raw error."""

from __future__ import annotations

from nio import AsyncClient, ErrorResponse, MatrixRoom, RoomResolveAliasResponse

from bot.community.moderation import RoomActionError, RoomActions
from bot.matrix.direct import DirectMessenger
from bot.matrix.room_kinds import RoomKinds
from bot.matrix.sender import Sender, SendError


class MatrixRoomActions(RoomActions):
    def __init__(
        self, client: AsyncClient, sender: Sender, direct: DirectMessenger, kinds: RoomKinds
    ) -> None:
        self._client = client
        self._sender = sender
        self._direct = direct
        self._kinds = kinds

    @property
    def _me(self) -> str:
        return self._client.user_id

    def _room(self, room_id: str) -> MatrixRoom:
        room = self._client.rooms.get(room_id)
        if room is None:
            raise RoomActionError(f"I am not in {room_id}.")
        return room

    def room_name(self, room_id: str) -> str:
        room = self._client.rooms.get(room_id)
        return room.display_name if room is not None else room_id

    async def resolve(self, room: str) -> str:
        if room.startswith("!"):
            self._room(room)
            return room
        response = await self._client.room_resolve_alias(room)
        if not isinstance(response, RoomResolveAliasResponse):
            raise RoomActionError(f"There is no room {room}.")
        self._room(response.room_id)
        return response.room_id

    def community_rooms(self) -> list[str]:
        """See room_kinds.py. Where the bot lacks power, the action says so for that room rather
        than skip it silently."""
        return self._kinds.community_rooms()

    @staticmethod
    def _check(response: object, what: str, name: str) -> None:
        if isinstance(response, ErrorResponse):
            raise RoomActionError(
                f"{name}: could not {what} ({response.status_code}: {response.message})."
            )

    async def kick(self, room_id: str, user_id: str, reason: str | None) -> None:
        room = self._room(room_id)
        if user_id not in room.users:
            raise RoomActionError(f"{room.display_name}: {user_id} is not in this room.")
        if not room.power_levels.can_user_kick(self._me, user_id):
            raise RoomActionError(f"{room.display_name}: I do not have the power to kick there.")
        self._check(
            await self._client.room_kick(room_id, user_id, reason), "kick", room.display_name
        )

    async def ban(self, room_id: str, user_id: str, reason: str | None) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_ban(self._me, user_id):
            raise RoomActionError(f"{room.display_name}: I do not have the power to ban there.")
        self._check(await self._client.room_ban(room_id, user_id, reason), "ban", room.display_name)

    async def unban(self, room_id: str, user_id: str) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_ban(self._me):
            raise RoomActionError(f"{room.display_name}: I do not have the power to unban there.")
        self._check(await self._client.room_unban(room_id, user_id), "unban", room.display_name)

    async def invite(self, room_id: str, user_id: str) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_invite(self._me):
            raise RoomActionError(f"{room.display_name}: I do not have the power to invite there.")
        self._check(await self._client.room_invite(room_id, user_id), "invite", room.display_name)

    async def post(self, room_id: str, markdown: str, *, key: str | None = None) -> None:
        room = self._room(room_id)
        try:
            # A stable transaction id: the homeserver drops a repeat (a command resumed after a restart).
            await self._sender.send_markdown(room_id, markdown, msgtype="m.text", txn_id=key)
        except SendError as problem:
            raise RoomActionError(f"{room.display_name}: {problem}") from None
