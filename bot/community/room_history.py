"""A room's recent history as the assistant may read it on a member's behalf: only what that member
could see themselves. Pure rules over plain data (bot/matrix fetches and decrypts the events).

Visibility follows `m.room.history_visibility` as the Matrix spec defines it, for each event with
the setting and the member's membership *at that event*:

- `world_readable`: everyone;
- `shared`: the member, if they are in the room now — except while they had left (a gap between
  leaving and coming back is never shown: stricter than the spec, never more than it allows);
- `invited`: from the moment they were invited (or joined);
- `joined`: only while they were joined;
- and always, whatever the setting, what was sent while they were joined.

Redacted messages, messages that could not be decrypted and the bot's own messages are left out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.community.tokens import MESSAGE_OVERHEAD, message_tokens

DEFAULT_VISIBILITY = "shared"  # the spec's default when a room has no history_visibility
VISIBILITIES = ("world_readable", "shared", "invited", "joined")
MESSAGE_CHARS = 2_000  # one message's text in a transcript, at most


@dataclass(frozen=True)
class TimelineEvent:
    """One event of a room's timeline, reduced to what the rules need."""

    event_id: str
    sender: str
    ts: int  # origin_server_ts, ms since the epoch
    kind: str  # "message", "member", "visibility" or "other"
    body: str | None = None  # a message's text
    sender_name: str | None = None
    redacted: bool = False
    undecryptable: bool = False
    replaces: str | None = None  # an edit (m.replace) of this event
    # m.room.member: whose membership, and what it is after and was before the event
    target: str | None = None
    membership: str | None = None
    prev_membership: str | None = None
    # m.room.history_visibility: after and before the event
    visibility: str | None = None
    prev_visibility: str | None = None


@dataclass(frozen=True)
class RoomMessage:
    event_id: str
    sender: str
    sender_name: str | None
    ts: int
    text: str


def _allowed(visibility: str, membership: str, shared_ok: bool) -> bool:
    if membership == "join" or visibility == "world_readable":
        return True
    if visibility == "invited":
        return membership == "invite"
    if visibility == "shared":
        return shared_ok
    return False  # "joined", or a value we do not know: the strictest reading


def visible_to(
    member: str,
    events: Sequence[TimelineEvent],
    *,
    membership_now: str,
    visibility_now: str,
) -> list[TimelineEvent]:
    """The events (oldest first) `member` could see, walking back from now: the membership and
    the setting before each state event come from its `prev_*` (none: not a member, the spec's
    default setting). A member not in the room now sees nothing but world-readable history."""
    visibility = visibility_now if visibility_now in VISIBILITIES else "joined"
    membership = membership_now
    # Under "shared", history before the member first came is theirs once they are in the room;
    # once we walk back past a time they had left, it stays hidden (the gap, and what came
    # before it under this rule, is only visible where they were joined or it was public).
    shared_ok = membership_now == "join"
    seen: list[TimelineEvent] = []
    for event in reversed(events):
        if _allowed(visibility, membership, shared_ok):
            seen.append(event)
        if event.kind == "member" and event.target == member:
            membership = event.prev_membership or "leave"
            if membership == "leave" and event.membership == "join" and event.prev_membership:
                shared_ok = False  # they came back: what is older than that is the gap
        elif event.kind == "visibility":
            before = event.prev_visibility or DEFAULT_VISIBILITY
            visibility = before if before in VISIBILITIES else "joined"
    seen.reverse()
    return seen


def messages(
    events: Iterable[TimelineEvent], *, bot_user_id: str, command_prefix: str | None = None
) -> list[RoomMessage]:
    """The readable messages, with edits applied (an author's own latest edit wins), leaving out
    redacted and undecryptable ones, the bot's own and (with a prefix) commands to the bot."""
    originals: dict[str, RoomMessage] = {}
    order: list[str] = []
    edits: dict[str, str] = {}
    for e in events:
        if e.kind != "message" or e.redacted or e.undecryptable or e.body is None:
            continue
        if e.sender == bot_user_id:
            continue
        if e.replaces is not None:
            edits[e.replaces] = f"{e.sender}\n{e.body}"
            continue
        originals[e.event_id] = RoomMessage(e.event_id, e.sender, e.sender_name, e.ts, e.body)
        order.append(e.event_id)
    out = []
    for event_id in order:
        message = originals[event_id]
        edit = edits.get(event_id)
        if edit is not None:
            editor, _, text = edit.partition("\n")
            if editor == message.sender:
                message = RoomMessage(
                    message.event_id, message.sender, message.sender_name, message.ts, text
                )
        if command_prefix and message.text.lstrip().startswith(command_prefix):
            continue
        if message.text.strip():
            out.append(message)
    return out


def after_event(items: Sequence[RoomMessage], event_id: str) -> list[RoomMessage] | None:
    """The messages after `event_id` (a read receipt); None when it is not among them."""
    for i, m in enumerate(items):
        if m.event_id == event_id:
            return list(items[i + 1 :])
    return None


def since(items: Sequence[RoomMessage], moment: datetime) -> list[RoomMessage]:
    cutoff = moment.timestamp() * 1000
    return [m for m in items if m.ts >= cutoff]


def line(m: RoomMessage) -> str:
    """One message as the model reads it: who said it, and what (a long message cut)."""
    text = m.text if len(m.text) <= MESSAGE_CHARS else m.text[: MESSAGE_CHARS - 1] + "…"
    name = m.sender_name or m.sender
    if m.sender_name and m.sender_name != m.sender:
        name = f"{m.sender_name} ({m.sender})"
    return f"{name}: {text}"


def transcript(items: Sequence[RoomMessage], budget: int, model: str) -> tuple[list[str], int]:
    """The newest messages whose lines fit `budget` tokens, oldest first, and how many older
    ones were left out."""
    kept: list[str] = []
    used = 0
    for m in reversed(items):
        text = line(m)
        used += message_tokens(text, model) - MESSAGE_OVERHEAD + 1
        if used > budget:
            break
        kept.append(text)
    kept.reverse()
    return kept, len(items) - len(kept)
