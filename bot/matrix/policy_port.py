"""The Matrix side of ban lists and room upgrades (bot/community/policy_lists.py,
room_upgrades.py), on MatrixRoomActions: every request waits out rate limits there; membership,
ACLs and list rules are read fresh from the homeserver."""

from __future__ import annotations

from typing import Any

from nio import AsyncClient, RoomResolveAliasResponse

from bot.community.moderation import RoomActionError
from bot.community.policy_rules import rule_kind
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.room_actions import MatrixRoomActions
from bot.matrix.room_kinds import RoomKinds

MEMBERSHIPS_ACTED_ON = ("join", "invite", "knock")


class MatrixPolicyPort:
    def __init__(self, client: AsyncClient, actions: MatrixRoomActions, kinds: RoomKinds) -> None:
        self._client = client
        self._actions = actions
        self._kinds = kinds

    async def join(self, room: str) -> str:
        known = self._client.rooms.get(room)
        if known is not None and self._client.user_id in known.users:
            return room
        return await self._actions.join(room)

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            response = await self._client.room_resolve_alias(alias)
        except CONNECT_ERRORS as problem:
            raise RoomActionError(f"{alias}: the homeserver did not answer ({problem}).") from None
        if isinstance(response, RoomResolveAliasResponse):
            return response.room_id
        if getattr(response, "status_code", None) == "M_NOT_FOUND":
            return None
        raise RoomActionError(f"{alias}: could not look up the alias ({response.message}).")

    async def rule_events(self, room_id: str) -> list[dict[str, Any]]:
        return [
            e for e in await self._actions.room_state(room_id)
            if rule_kind(str(e.get("type", ""))) is not None
        ]  # fmt: skip

    def community_rooms(self) -> list[str]:
        return self._kinds.community_rooms()

    def members(self, room_id: str) -> set[str]:
        room = self._client.rooms.get(room_id)
        return set(room.users) if room is not None else set()

    async def membership(self, room_id: str, mxid: str) -> str | None:
        content = await self._actions.state_content(room_id, "m.room.member", mxid)
        membership = (content or {}).get("membership")
        return membership if isinstance(membership, str) else None

    async def ban(self, room_id: str, mxid: str, reason: str) -> None:
        await self._actions.ban(room_id, mxid, reason)

    async def unban(self, room_id: str, mxid: str) -> None:
        await self._actions.unban(room_id, mxid)

    async def acl(self, room_id: str) -> dict[str, Any] | None:
        return await self._actions.state_content(room_id, "m.room.server_acl")

    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> None:
        await self._actions.put_state(room_id, event_type, content, state_key)

    def room_name(self, room_id: str) -> str:
        return self._actions.room_name(room_id)

    async def post(self, room_id: str, markdown: str) -> None:
        await self._actions.post(room_id, markdown)
