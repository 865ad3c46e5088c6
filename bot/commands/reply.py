"""What a command answers, before anyone decides how it looks in Matrix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.community.markdown import shorten

ERROR_LIMIT = 1_000


@dataclass(frozen=True)
class Reply:
    """Markdown text plus how to deliver it; bot/matrix/render.py turns it into Matrix content."""

    markdown: str
    mentions: tuple[str, ...] = ()
    # Also (or only) sent to the caller by direct message, e.g. a login link asked for in a room.
    direct_markdown: str | None = None
    # Not a reply to send but a question for the assistant, answered as a chat turn (`!ask`).
    chat_prompt: str | None = None
    # In a room, open a thread on the command (a long answer, e.g. a summary), unless in one.
    in_thread: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    # The real answer takes long (a model call): made by `later` and delivered when ready, while
    # the room's next commands go on being answered. `markdown` is then unused.
    later: Callable[[], Awaitable[Reply]] | None = None

    @classmethod
    def when_ready(cls, later: Callable[[], Awaitable[Reply]]) -> Reply:
        return cls("", later=later)

    @classmethod
    def error(cls, text: str) -> Reply:
        # Errors are short; one that quotes too much member input is cut rather than flood.
        return cls(f"⚠️ {shorten(text, ERROR_LIMIT)}")
