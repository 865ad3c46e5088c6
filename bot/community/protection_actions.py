"""What the protections need done in Matrix, on top of moderation's RoomActions: bot/matrix's
MatrixRoomActions implements both (the same object moderation uses), bot/app passes it in."""

from __future__ import annotations

from typing import Any, Protocol

from bot.community.moderation import RoomActions


class ProtectionActions(RoomActions, Protocol):
    def redact_later(self, room_id: str, event_ids: list[str], reason: str) -> None:
        """Queue redactions; they go out paced, behind the bot's replies, never blocking."""

    async def mute(self, room_id: str, user_ids: list[str]) -> dict[str, int]:
        """One power-level change silencing them all; their previous levels."""

    async def unmute(self, room_id: str, user_id: str, level: int | None) -> None:
        """Back to `level` (None: the room's default for users)."""

    async def join_rule(self, room_id: str) -> dict[str, Any]: ...
    async def set_join_rule(self, room_id: str, content: dict[str, Any]) -> None: ...
    async def send_direct(self, user_id: str, markdown: str) -> None: ...
