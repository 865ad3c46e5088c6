"""What a member's message is for the bot, decided without doing anything: a command, a turn for the
assistant, an edit of an earlier message, or nothing. Pure (no I/O), so every rule is unit-tested
without Matrix; acting on the decision is the dispatcher's job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.matrix.triggers import find_trigger, resolve_pills


@dataclass(frozen=True)
class Command:
    text: str  # the command line without its prefix, mention pills resolved to MXIDs


@dataclass(frozen=True)
class Chat:
    text: str


@dataclass(frozen=True)
class ThreadFollowUp:
    """A turn for the assistant if it is part of this room thread (only the store knows)."""

    text: str
    thread_root: str


@dataclass(frozen=True)
class Edit:
    target: str  # the event the member replaced
    new_body: str


@dataclass(frozen=True)
class Ignore:
    pass


Route = Command | Chat | ThreadFollowUp | Edit | Ignore
IGNORE = Ignore()


def since_join(events: list[Any], bot_user_id: str) -> list[Any]:
    """A room the bot has just joined arrives with its recent history: only what came after the
    bot's own join is for it."""
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if (
            getattr(event, "state_key", None) == bot_user_id
            and getattr(event, "membership", None) == "join"
            and getattr(event, "prev_membership", None) != "join"
        ):
            return events[index + 1 :]
    return events


def is_arrival(event: Any, bot_user_id: str) -> bool:
    """A real join: not a profile change of someone already there, not the bot itself."""
    return (
        event.membership == "join"
        and event.prev_membership != "join"
        and event.state_key != bot_user_id
    )


def thread_root(content: dict[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        return root if isinstance(root, str) else None
    return None


def _edit(content: dict[str, Any]) -> Edit | Ignore | None:
    """None when the message is not an edit; an Edit when it is a usable one."""
    relates = content.get("m.relates_to")
    if not (isinstance(relates, dict) and relates.get("rel_type") == "m.replace"):
        return None
    new = content.get("m.new_content")
    target = relates.get("event_id")
    if isinstance(target, str) and isinstance(new, dict) and isinstance(new.get("body"), str):
        return Edit(target, new["body"])
    return IGNORE


def route(
    content: dict[str, Any],
    *,
    prefix: str,
    bot_user_id: str,
    bot_display_name: str | None,
    is_direct: bool,
    is_command: Callable[[str], bool],
    assistant: bool,
) -> Route:
    """Commands need the prefix, or a mention followed by a known command word; the rest of a
    mention, and every message in a DM, is for the assistant (when there is one); in a room, a
    message in a thread may continue the assistant's conversation there."""
    edit = _edit(content)
    if edit is not None:
        return edit if assistant else IGNORE
    body = content.get("body")
    if not isinstance(body, str):
        return IGNORE
    trigger = find_trigger(
        content, prefix=prefix, bot_user_id=bot_user_id, bot_display_name=bot_display_name
    )
    if trigger is not None:
        words = trigger.text.split(maxsplit=1)
        if trigger.prefixed or (words and is_command(words[0])):
            return Command(resolve_pills(trigger.text, content))
        if assistant and trigger.text.strip():
            return Chat(trigger.text)
    if not assistant:
        return IGNORE
    if is_direct:
        return Chat(body)
    root = thread_root(content)
    return ThreadFollowUp(body, root) if root is not None else IGNORE
