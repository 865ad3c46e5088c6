"""The protections stage between the router and the handlers: each event of a community room is
told to the protections as an Observation (no Matrix types beyond this module), with the power
levels the rules need read from the room's state as nio keeps it. What the protections hold back
(a flood's messages, a filtered link) goes no further: it is not a command to answer."""

from __future__ import annotations

from typing import Any

from nio import AsyncClient, RoomMemberEvent

from bot.community.protection_rules import Observation
from bot.community.protections import ProtectionService
from bot.community.text_filters import link_hosts, pill_mentions, plain_mentions
from bot.matrix import router
from bot.matrix.room_kinds import RoomKinds
from bot.offload import off_loop


def _levels(client: AsyncClient, room_id: str, sender: str) -> tuple[int, int]:
    """The sender's power level, and the level needed to notify the whole room."""
    room = client.rooms.get(room_id)
    if room is None:
        return 0, 50
    levels = room.power_levels
    return int(levels.get_user_level(sender)), int(levels.get_notification_required_level("room"))


def _observe(room_id: str, event: Any, sender: str, power: int, notify: int) -> Observation | None:
    source = event.source if isinstance(getattr(event, "source", None), dict) else {}
    kind = source.get("type")
    content = source.get("content")
    if not isinstance(content, dict) or kind not in ("m.room.message", "m.sticker"):
        return None
    body = content.get("body") if isinstance(content.get("body"), str) else ""
    formatted = content.get("formatted_body")
    formatted = formatted if isinstance(formatted, str) else None
    mentions_field = content.get("m.mentions")
    mentioned: set[str] = set()
    room_mention = "@room" in body
    if isinstance(mentions_field, dict):
        ids = mentions_field.get("user_ids")
        if isinstance(ids, list):
            mentioned.update(i for i in ids[:1000] if isinstance(i, str))
        room_mention = room_mention or mentions_field.get("room") is True
    mentioned |= pill_mentions(formatted) | plain_mentions(body)
    mentioned.discard(sender)
    msgtype = "m.sticker" if kind == "m.sticker" else str(content.get("msgtype", "m.text"))
    return Observation(
        room_id=room_id, sender=sender, event_id=event.event_id, kind="message",
        msgtype=msgtype, body=body, hosts=tuple(link_hosts(body, formatted)),
        mentions=frozenset(mentioned), room_mention=room_mention, sender_power=power,
        notify_room_power=notify,
    )  # fmt: skip


class ProtectionStage:
    def __init__(self, client: AsyncClient, kinds: RoomKinds, service: ProtectionService) -> None:
        self._client, self._kinds, self.service = client, kinds, service

    def _community(self, room_id: str) -> bool:
        return room_id in self.service.locked_rooms or self._kinds.is_community(room_id)

    async def screen(self, room_id: str, event: Any) -> bool:
        """False when the event should not reach the handlers."""
        sender = getattr(event, "sender", None)
        event_id = getattr(event, "event_id", None)
        if not isinstance(sender, str) or not isinstance(event_id, str):
            return True
        if not self._community(room_id):
            return True
        if isinstance(event, RoomMemberEvent):
            if router.is_arrival(event, self._client.user_id):
                joined = Observation(room_id, event.state_key, event_id, "join")
                await self.service.screen(joined)
            return True
        power, notify = _levels(self._client, room_id, sender)
        if await self.service.is_exempt(sender, power):
            return True  # moderators' messages are not even read
        size = len(str(getattr(event, "source", "")))
        obs = await off_loop(lambda: _observe(room_id, event, sender, power, notify), size)
        if obs is None:
            return True
        return await self.service.screen(obs)
