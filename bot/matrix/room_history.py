"""Reading a room's recent timeline for summaries and room context: `/messages` backwards from now
in pages, bounded in events and text, encrypted events decrypted by the bot's Olm machine (nio
does it as the page arrives), each reduced to the plain TimelineEvent the domain's rules take.
The member's read receipt comes from a one-off sync limited to that room's receipts: the bot's
own sync leaves receipts out (they are most of a busy server's traffic)."""

from __future__ import annotations

import json
from typing import Any

import structlog
from nio import (
    Api,
    AsyncClient,
    MegolmEvent,
    MessageDirection,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
)

from bot.community.chat import ChatRefused
from bot.community.room_history import TimelineEvent
from bot.community.summaries import HistoryLimits, HistoryWindow

log = structlog.get_logger(__name__)

PAGE = 100
MESSAGE_TYPES = ("m.room.message", "m.room.encrypted", "m.room.member", "m.room.history_visibility")
_FILTER = {"types": list(MESSAGE_TYPES), "lazy_load_members": False}
_RECEIPTS_FILTER = {
    "presence": {"types": []},
    "account_data": {"types": []},
    "room": {
        "timeline": {"limit": 0},
        "state": {"types": []},
        "account_data": {"types": []},
        "ephemeral": {"types": ["m.receipt"]},
    },
}
# Attachments are summarised by what they are; their body is only a file name.
_ATTACHMENTS = {"m.image": "an image", "m.file": "a file", "m.audio": "audio", "m.video": "a video"}


class HistoryUnavailable(ChatRefused):
    pass


def _membership(content: Any) -> str | None:
    value = content.get("membership") if isinstance(content, dict) else None
    return value if isinstance(value, str) else None


def _prev_content(source: dict[str, Any]) -> Any:
    unsigned = source.get("unsigned")
    if isinstance(unsigned, dict) and "prev_content" in unsigned:
        return unsigned["prev_content"]
    return source.get("prev_content")


def _message_body(content: dict[str, Any]) -> tuple[str | None, str | None]:
    """(text, id of the event it edits)."""
    relates = content.get("m.relates_to")
    replaces = None
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        new = content.get("m.new_content")
        if not isinstance(target, str) or not isinstance(new, dict):
            return None, None
        replaces, content = target, new
    msgtype = content.get("msgtype")
    body = content.get("body")
    if not isinstance(body, str):
        return None, replaces
    if msgtype in _ATTACHMENTS:
        return f"[sent {_ATTACHMENTS[msgtype]}]", replaces
    if msgtype == "m.emote":
        return f"* {body}", replaces
    return body, replaces


def timeline_event(event: Any, names: dict[str, str]) -> TimelineEvent | None:
    """A nio event (decrypted when it could be) as the domain sees it; None for other kinds."""
    source = getattr(event, "source", None)
    if not isinstance(source, dict):
        return None
    event_id, sender = source.get("event_id"), source.get("sender")
    if not isinstance(event_id, str) or not isinstance(sender, str):
        return None
    ts = source.get("origin_server_ts")
    ts = ts if isinstance(ts, int) else 0
    unsigned = source.get("unsigned")
    redacted = isinstance(unsigned, dict) and "redacted_because" in unsigned
    kind = source.get("type")
    content = source.get("content")
    content = content if isinstance(content, dict) else {}
    name = names.get(sender)
    if isinstance(event, MegolmEvent) or kind == "m.room.encrypted":
        return TimelineEvent(
            event_id, sender, ts, "message", sender_name=name, redacted=redacted,
            undecryptable=True,
        )  # fmt: skip
    if kind == "m.room.message":
        body, replaces = (None, None) if redacted else _message_body(content)
        return TimelineEvent(
            event_id, sender, ts, "message", body=body, sender_name=name,
            redacted=redacted or (body is None and replaces is None), replaces=replaces,
        )  # fmt: skip
    if kind == "m.room.member":
        state_key = source.get("state_key")
        return TimelineEvent(
            event_id, sender, ts, "member",
            target=state_key if isinstance(state_key, str) else None,
            membership=_membership(content), prev_membership=_membership(_prev_content(source)),
        )  # fmt: skip
    if kind == "m.room.history_visibility":
        before = _prev_content(source)
        after = content.get("history_visibility")
        prev = before.get("history_visibility") if isinstance(before, dict) else None
        return TimelineEvent(
            event_id, sender, ts, "visibility",
            visibility=after if isinstance(after, str) else None,
            prev_visibility=prev if isinstance(prev, str) else None,
        )  # fmt: skip
    return TimelineEvent(event_id, sender, ts, "other")


class MatrixRoomHistory:
    """The domain's RoomHistory, over the bot's nio client."""

    def __init__(self, client: AsyncClient, page: int = PAGE) -> None:
        self._client = client
        self._page = page

    async def _state(self, room_id: str, event_type: str, state_key: str = "") -> dict | None:
        response = await self._client.room_get_state_event(room_id, event_type, state_key)
        if isinstance(response, RoomGetStateEventResponse) and isinstance(response.content, dict):
            return response.content
        return None

    async def recent(self, room_id: str, member: str, limits: HistoryLimits) -> HistoryWindow:
        member_state = await self._state(room_id, "m.room.member", member)
        visibility = await self._state(room_id, "m.room.history_visibility")
        membership_now = _membership(member_state) or "leave"
        visibility_now = (visibility or {}).get("history_visibility", "shared")
        room = self._client.rooms.get(room_id)
        names = {u: room.user_name(u) or u for u in room.users} if room is not None else {}
        newest_first: list[TimelineEvent] = []
        chars = messages = 0
        token: str | None = None
        complete = False
        while len(newest_first) < limits.max_events:
            response = await self._client.room_messages(
                room_id, start=token, direction=MessageDirection.back,
                limit=min(self._page, limits.max_events - len(newest_first)),
                message_filter=_FILTER,
            )  # fmt: skip
            if not isinstance(response, RoomMessagesResponse):
                log.warning("history.unavailable", room_id=room_id, error=str(response))
                raise HistoryUnavailable("I could not read this room's history just now.")
            stop = False
            for event in response.chunk:
                reduced = timeline_event(event, names)
                if reduced is None:
                    continue
                if limits.since_ms is not None and reduced.ts < limits.since_ms:
                    stop = True
                    break
                newest_first.append(reduced)
                if reduced.kind == "message":
                    messages += 1
                    chars += len(reduced.body or "")
                if (
                    reduced.event_id == limits.stop_at_event
                    or (limits.messages_wanted and messages >= limits.messages_wanted)
                    or chars >= limits.max_chars
                    or len(newest_first) >= limits.max_events
                ):
                    stop = True
                    break
            if stop:
                break
            if not response.chunk or not response.end or response.end == token:
                complete = True
                break
            token = response.end
        newest_first.reverse()
        log.info("history.read", room_id=room_id, events=len(newest_first), complete=complete)
        return HistoryWindow(newest_first, membership_now, str(visibility_now), complete)

    async def read_receipt(self, room_id: str, member: str) -> tuple[str, int] | None:
        sync_filter = json.loads(json.dumps(_RECEIPTS_FILTER))
        sync_filter["room"]["rooms"] = [room_id]
        method, path = Api.sync(self._client.access_token, filter=sync_filter)
        response = await self._client.send(method, path)
        try:
            if response.status != 200:
                log.warning("history.receipts_unavailable", status=response.status)
                return None
            body = await response.json()
        finally:
            response.release()
        room = (((body.get("rooms") or {}).get("join") or {}).get(room_id)) or {}
        best: tuple[int, str] | None = None
        for event in (room.get("ephemeral") or {}).get("events") or []:
            if not isinstance(event, dict) or event.get("type") != "m.receipt":
                continue
            for event_id, kinds in (event.get("content") or {}).items():
                read = (kinds or {}).get("m.read") if isinstance(kinds, dict) else None
                mine = read.get(member) if isinstance(read, dict) else None
                if not isinstance(mine, dict) or mine.get("thread_id") not in (None, "main"):
                    continue
                ts = mine.get("ts") if isinstance(mine.get("ts"), int) else 0
                if best is None or ts >= best[0]:
                    best = (ts, event_id)
        return (best[1], best[0]) if best else None
