"""Which part of a conversation goes into the prompt: the most recent whole turns that fit the
token budget, so the prompt stays bounded however long the conversation grows."""

from __future__ import annotations

from bot.store.chat import StoredMessage

__all__ = ["StoredMessage", "rows_to_read", "select_recent"]


def select_recent(newest_first: list[StoredMessage], budget: int) -> list[StoredMessage]:
    """From messages newest first, the longest recent run that fits `budget`, oldest first,
    never starting with an answer whose question did not fit."""
    chosen: list[StoredMessage] = []
    used = 0
    for message in newest_first:
        if used + message.tokens > budget:
            break
        chosen.append(message)
        used += message.tokens
    chosen.reverse()
    while chosen and chosen[0].role == "assistant":
        chosen.pop(0)
    return chosen


def rows_to_read(budget: int, overhead: int) -> int:
    """How many stored messages can possibly fit: every message costs at least its overhead."""
    return budget // max(1, overhead) + 2
