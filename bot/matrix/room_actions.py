"""RoomActions for the moderation domain, on the Matrix client: power is checked against the
room's power levels first, so "I cannot do that here" is said clearly instead of a raw error.
Membership changes wait out the homeserver's rate limit (within RATE_LIMIT_BUDGET_S); a homeserver
that does not answer, or keeps limiting, raises RoomActionUnavailable (try again later). Room state
is read here too, fresh from the homeserver, for the group-gated rooms (access_rooms.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nio import (
    AsyncClient,
    ErrorResponse,
    MatrixRoom,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomResolveAliasResponse,
)

from bot.community.moderation import RoomActionError, RoomActions, RoomActionUnavailable
from bot.matrix.client import CONNECT_ERRORS
from bot.matrix.direct import DirectMessenger
from bot.matrix.room_kinds import RoomKinds
from bot.matrix.sender import Sender, SendError

log = structlog.get_logger(__name__)

RATE_LIMIT_BUDGET_S = 120.0  # how long one action waits out M_LIMIT_EXCEEDED before giving up


class MatrixRoomActions(RoomActions):
    def __init__(
        self, client: AsyncClient, sender: Sender, direct: DirectMessenger, kinds: RoomKinds
    ) -> None:
        self._client = client
        self._sender = sender
        self._direct = direct
        self._kinds = kinds
        self.rate_limited_count = 0  # how often the homeserver told us to slow down
        self.redactions: Any = None  # the protections' RedactionPacer, made on first use
        self.successors: dict[str, str] = {}  # upgraded room -> its replacement (room_upgrades)

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
        room = self.successors.get(room, room)
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

    async def _call(
        self, request: Callable[[], Awaitable[Any]], what: str, name: str, *, missing: Any = ...
    ) -> Any:
        """`request` until it is not rate-limited (within RATE_LIMIT_BUDGET_S); its response, or
        RoomActionError (the homeserver said no) / RoomActionUnavailable (it may say yes later).
        `missing`, when given, is returned for M_NOT_FOUND."""
        deadline = time.monotonic() + RATE_LIMIT_BUDGET_S
        while True:
            try:
                response = await request()
            except CONNECT_ERRORS as problem:
                raise RoomActionUnavailable(
                    f"{name}: could not {what}, the homeserver did not answer ({problem})."
                ) from None
            if not isinstance(response, ErrorResponse):
                return response
            if response.status_code == "M_NOT_FOUND" and missing is not ...:
                return missing
            if response.status_code == "M_LIMIT_EXCEEDED":
                self.rate_limited_count += 1
                wait = (response.retry_after_ms or 1000) / 1000
                if time.monotonic() + wait > deadline:
                    raise RoomActionUnavailable(
                        f"{name}: could not {what}, the homeserver kept rate-limiting me."
                    )
                log.info("matrix.rate_limited", action=what, retry_after_ms=int(wait * 1000))
                await asyncio.sleep(wait)
                continue
            status = getattr(response.transport_response, "status", 0) or 0
            error = RoomActionUnavailable if status >= 500 else RoomActionError
            raise error(f"{name}: could not {what} ({response.status_code}: {response.message}).")

    async def kick(self, room_id: str, user_id: str, reason: str | None) -> None:
        room = self._room(room_id)
        if user_id not in room.users:
            raise RoomActionError(f"{room.display_name}: {user_id} is not in this room.")
        if not room.power_levels.can_user_kick(self._me, user_id):
            raise RoomActionError(f"{room.display_name}: I do not have the power to kick there.")
        await self.remove(room_id, user_id, reason)

    async def remove(self, room_id: str, user_id: str, reason: str | None) -> None:
        """A kick (or a withdrawn invite) whose power and membership the caller has checked
        against the homeserver's own state; the homeserver still has the last word."""
        await self._call(
            lambda: self._client.room_kick(room_id, user_id, reason), "kick",
            self.room_name(room_id),
        )  # fmt: skip

    async def ban(self, room_id: str, user_id: str, reason: str | None) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_ban(self._me, user_id):
            raise RoomActionError(f"{room.display_name}: I do not have the power to ban there.")
        await self._call(
            lambda: self._client.room_ban(room_id, user_id, reason), "ban", room.display_name
        )

    async def unban(self, room_id: str, user_id: str) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_ban(self._me):
            raise RoomActionError(f"{room.display_name}: I do not have the power to unban there.")
        await self._call(
            lambda: self._client.room_unban(room_id, user_id), "unban", room.display_name
        )

    async def invite(self, room_id: str, user_id: str) -> None:
        room = self._room(room_id)
        if not room.power_levels.can_user_invite(self._me):
            raise RoomActionError(f"{room.display_name}: I do not have the power to invite there.")
        await self.send_invite(room_id, user_id)

    async def send_invite(self, room_id: str, user_id: str) -> None:
        """An invite whose power the caller has checked against the homeserver's own state."""
        await self._call(
            lambda: self._client.room_invite(room_id, user_id), "invite", self.room_name(room_id)
        )

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """Every state event of the room (members of every membership among them), as the
        homeserver has it now. RoomActionError when the bot may not see it (not in the room)."""
        response = await self._call(
            lambda: self._client.room_get_state(room_id), "read the room's state",
            self.room_name(room_id),
        )  # fmt: skip
        assert isinstance(response, RoomGetStateResponse)
        return [e for e in response.events if isinstance(e, dict)]

    async def state_content(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> dict[str, Any] | None:
        """One state event's content as the homeserver has it now; None when there is none."""
        response = await self._call(
            lambda: self._client.room_get_state_event(room_id, event_type, state_key),
            "read the room's state", self.room_name(room_id), missing=None,
        )  # fmt: skip
        if response is None:
            return None
        assert isinstance(response, RoomGetStateEventResponse)
        return response.content

    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> None:
        """Send a state event (a policy rule, a server ACL); the homeserver checks the power."""
        await self._call(
            lambda: self._client.room_put_state(room_id, event_type, content, state_key),
            f"set {event_type}", self.room_name(room_id),
        )  # fmt: skip

    async def join(self, room: str) -> str:
        """Join a room by id or alias (a ban list, a room's replacement); its id."""
        response = await self._call(lambda: self._client.join(room), "join", room)
        return str(response.room_id)

    # -- for the protections (bot/community/protection_actions.py) ---------------------------

    def redact_later(self, room_id: str, event_ids: list[str], reason: str) -> None:
        if self.redactions is None:
            from bot.matrix.redaction_pacer import RedactionPacer

            self.redactions = RedactionPacer(self._client, self._sender)
        self.redactions.add(room_id, event_ids, reason)

    async def _power_levels(self, room_id: str) -> dict[str, Any]:
        content = await self.state_content(room_id, "m.room.power_levels")
        return dict(content or {})

    async def _put_state(self, room_id: str, event_type: str, content: dict[str, Any]) -> None:
        await self._call(
            lambda: self._client.room_put_state(room_id, event_type, content), f"set {event_type}",
            self.room_name(room_id),
        )  # fmt: skip

    async def mute(self, room_id: str, user_ids: list[str]) -> dict[str, int]:
        """One power-levels event silencing them all (a level below what m.room.message needs);
        their previous explicit levels (absent: the room's users_default)."""
        name = self.room_name(room_id)
        levels = await self._power_levels(room_id)
        users = dict(levels.get("users") or {})
        events = levels.get("events") or {}
        me = int(users.get(self._me, levels.get("users_default", 0)))
        if me < int(events.get("m.room.power_levels", levels.get("state_default", 50))):
            raise RoomActionError(f"{name}: I do not have the power to mute there.")
        needed = int(events.get("m.room.message", levels.get("events_default", 0)))
        previous = {}
        for user_id in user_ids:
            current = int(users.get(user_id, levels.get("users_default", 0)))
            if current >= me:
                raise RoomActionError(f"{name}: {user_id} has as much power as I do.")
            if user_id in users:
                previous[user_id] = int(users[user_id])
            users[user_id] = min(current, needed - 1)
        await self._put_state(room_id, "m.room.power_levels", {**levels, "users": users})
        return previous

    async def unmute(self, room_id: str, user_id: str, level: int | None) -> None:
        levels = await self._power_levels(room_id)
        users = dict(levels.get("users") or {})
        if level is None:
            users.pop(user_id, None)
        else:
            users[user_id] = level
        await self._put_state(room_id, "m.room.power_levels", {**levels, "users": users})

    async def join_rule(self, room_id: str) -> dict[str, Any]:
        return dict(await self.state_content(room_id, "m.room.join_rules") or {})

    async def set_join_rule(self, room_id: str, content: dict[str, Any]) -> None:
        await self._put_state(room_id, "m.room.join_rules", content)

    async def send_direct(self, user_id: str, markdown: str) -> None:
        try:
            room_id = await self._direct.room_for(user_id)
            await self._sender.send_markdown(room_id, markdown)
        except SendError as problem:
            raise RoomActionError(f"could not write to {user_id}: {problem}") from None

    async def post(self, room_id: str, markdown: str, *, key: str | None = None) -> None:
        room = self._room(room_id)
        try:
            # A stable transaction id: the homeserver drops a repeat (a command resumed after a restart).
            await self._sender.send_markdown(room_id, markdown, msgtype="m.text", txn_id=key)
        except SendError as problem:
            raise RoomActionError(f"{room.display_name}: {problem}") from None
