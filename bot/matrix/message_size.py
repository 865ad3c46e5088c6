"""Matrix events have a size limit (Synapse refuses more than 65,536 bytes with M_TOO_LARGE), and
what counts is the whole event: the homeserver's envelope, the encryption's base64, and for an
edit the text four times over (body and HTML, and both again in m.new_content). A long reply is
therefore cut into parts that each fit, even as an edit in an encrypted room.

Cutting also bounds the work of rendering: markdown-it is not linear on hostile input (thousands
of unclosed brackets), so no single render sees more than MAX_PART_CHARS characters, and long
texts are rendered in a worker thread rather than on the event loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.matrix.render import edit_content, message_content
from bot.offload import off_loop

MAX_EVENT_BYTES = 65_536
# Room id, sender, timestamps, hashes, signatures, prev/auth events: what the homeserver adds.
ENVELOPE_BYTES = 4_096
# A megolm payload carries type, room id and content, then base64 (4/3) plus keys and MAC.
ENCRYPTION_OVERHEAD_BYTES = 600
MAX_PART_CHARS = 8_000
MIN_PART_CHARS = 200
# No text this short can outgrow an event, even as an edit in an encrypted room (each character
# weighs at most ~10 bytes of HTML plus ~6 of body, twice for an edit, a third more encrypted):
# no need to render it once more just to measure.
SURELY_FITS_CHARS = 1_000


def event_bytes(content: dict[str, Any], *, encrypted: bool = True) -> int:
    """What an event with this content weighs at the homeserver (conservatively)."""
    raw = len(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode())
    if encrypted:
        raw = (raw + ENCRYPTION_OVERHEAD_BYTES) * 4 // 3 + ENCRYPTION_OVERHEAD_BYTES
    return raw + ENVELOPE_BYTES


def fits(content: dict[str, Any]) -> bool:
    return event_bytes(content) <= MAX_EVENT_BYTES


def _fits_as_edit(markdown: str) -> bool:
    return fits(edit_content("$" + "x" * 43, message_content(markdown)))


def _fits_as_message(markdown: str) -> bool:
    return fits(message_content(markdown))


def _fence_open_at_end(text: str) -> str | None:
    """The opening line of a fenced code block left open at the end of `text`, if any."""
    opening: str | None = None
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        if len(line) - len(stripped) > 3:
            continue
        if opening is None and stripped.startswith(("```", "~~~")):
            opening = stripped
        elif (
            opening is not None
            and stripped.startswith(opening[:3])
            and not stripped[3:].strip(opening[0]).strip()
        ):
            opening = None
    return opening


def _cut_point(text: str, limit: int) -> int:
    """Where to end a part of at most `limit` characters: a paragraph, a line, a word, or hard."""
    if len(text) <= limit:
        return len(text)
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, limit // 2, limit)
        if at > 0:
            return at + len(separator)
    return limit


def split_markdown(
    markdown: str, *, fit: Callable[[str], bool] = _fits_as_edit, max_parts: int | None = None
) -> list[str]:
    """Consecutive parts of `markdown`, each of which fits one event (as an edit, by default).
    A code block cut in two is closed at the end of one part and reopened in the next."""
    if len(markdown) <= SURELY_FITS_CHARS:
        return [markdown]
    parts: list[str] = []
    rest = markdown
    while rest and (max_parts is None or len(parts) < max_parts):
        limit = MAX_PART_CHARS
        while True:
            end = _cut_point(rest, limit)
            part, remainder = rest[:end].rstrip("\n"), rest[end:].lstrip("\n")
            fence = _fence_open_at_end(part) if remainder else None
            if fence is not None and part.strip() != fence.strip():
                part += "\n" + fence[:3]
                # Reopened with its language, unless that line is long enough to matter.
                remainder = f"{fence if len(fence) <= 80 else fence[:3]}\n{remainder}"
            if fit(part) or limit <= MIN_PART_CHARS:
                break
            limit //= 2
        parts.append(part)
        rest = remainder
    return parts or [""]


def message_parts(
    markdown: str,
    *,
    msgtype: str = "m.notice",
    mentions: tuple[str, ...] | list[str] = (),
    reply_to: str | None = None,
    thread_root: str | None = None,
    as_edit: bool = False,
) -> list[dict[str, Any]]:
    """Contents for `markdown`, in as many messages as it takes; mentions go with the first."""
    texts = split_markdown(markdown, fit=_fits_as_edit if as_edit else _fits_as_message)
    return [
        message_content(
            text, msgtype=msgtype, mentions=mentions if i == 0 else (), reply_to=reply_to,
            thread_root=thread_root,
        )
        for i, text in enumerate(texts)
    ]  # fmt: skip


async def render_parts(markdown: str, **options: Any) -> list[dict[str, Any]]:
    """message_parts() without stalling the event loop on a long text."""
    return await off_loop(lambda: message_parts(markdown, **options), len(markdown))
