"""Is a message addressed to the bot? A command prefix, or a mention of the bot (pill, MXID or name)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trigger:
    text: str  # what follows the prefix or the mention
    prefixed: bool  # the text began with the command prefix
    mentioned: bool  # the bot was mentioned


def _mentions_bot(content: dict[str, Any], bot_user_id: str) -> bool:
    mentions = content.get("m.mentions")
    if isinstance(mentions, dict):
        user_ids = mentions.get("user_ids")
        if isinstance(user_ids, list) and bot_user_id in user_ids:
            return True
    formatted = content.get("formatted_body")
    return isinstance(formatted, str) and f"matrix.to/#/{bot_user_id}" in formatted


def _strip_leading_name(body: str, names: list[str]) -> str | None:
    for name in sorted(filter(None, names), key=len, reverse=True):
        match = re.match(rf"^\s*@?{re.escape(name)}\b[:,]?\s*", body, re.IGNORECASE)
        if match:
            return body[match.end() :]
    return None


def find_trigger(
    content: dict[str, Any], *, prefix: str, bot_user_id: str, bot_display_name: str | None
) -> Trigger | None:
    body = content.get("body")
    if not isinstance(body, str):
        return None
    if body.startswith(prefix):
        return Trigger(body[len(prefix) :], prefixed=True, mentioned=False)
    localpart = bot_user_id[1:].split(":", 1)[0]
    rest = _strip_leading_name(body, [bot_user_id.lstrip("@"), bot_display_name or "", localpart])
    if rest is None and not _mentions_bot(content, bot_user_id):
        return None
    text = (rest if rest is not None else body).strip()
    if text.startswith(prefix):
        return Trigger(text[len(prefix) :], prefixed=True, mentioned=True)
    return Trigger(text, prefixed=False, mentioned=True)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MATRIX_TO = "https://matrix.to/#/"
MAX_PILLS = 20  # no command names more people than this
MAX_LABEL = 512  # display names are at most 256 characters


def _href(tag: str) -> str | None:
    """The href attribute's value in an opening tag's text (`<a ... `, without `>`)."""
    lowered = tag.translate(_ASCII_LOWER)
    at = lowered.find("href=")
    if at < 0 or at + 5 >= len(tag) or not tag[at - 1].isspace():
        return None
    quote = tag[at + 5]
    if quote not in "\"'":
        return None
    end = tag.find(quote, at + 6)
    return tag[at + 6 : end] if end > 0 else None


def _strip_tags(html: str) -> str:
    pieces, pos = [], 0
    while (start := html.find("<", pos)) >= 0:
        end = html.find(">", start)
        if end < 0:
            break
        pieces.append(html[pos:start])
        pos = end + 1
    pieces.append(html[pos:])
    return "".join(pieces)


def pills(formatted: str) -> list[tuple[str, str]]:
    """(MXID, label) of the user pills in `formatted_body`, in one pass over it: each search
    goes forward from where the last ended (the next `>` and `</a>` are remembered), so an
    unclosed tag followed by 60,000 characters costs one scan, not one per character."""
    from html import unescape
    from urllib.parse import unquote

    lowered = formatted.translate(_ASCII_LOWER)  # same length: indexes carry over
    found: list[tuple[str, str]] = []
    pos, tag_end, close = 0, -1, -1
    while len(found) < MAX_PILLS:
        start = lowered.find("<a", pos)
        if start < 0:
            break
        if tag_end < start:
            tag_end = lowered.find(">", start)
        if tag_end < 0:
            break
        if close < tag_end:
            close = lowered.find("</a>", tag_end)
        if close < 0:
            break
        pos = start + 2
        if not lowered[start + 2 : start + 3].isspace():
            continue  # <abbr>, <address>: not a link
        href = _href(formatted[start:tag_end])
        if href is None or not href.startswith(_MATRIX_TO):
            continue
        target = unquote(href[len(_MATRIX_TO) :].split("?", 1)[0].split("/", 1)[0])
        if not target.startswith("@") or close - tag_end > MAX_LABEL:
            continue
        label = unescape(_strip_tags(formatted[tag_end + 1 : close])).strip()
        found.append((target, label))
        pos = close + 4
    return found


def resolve_pills(text: str, content: dict[str, Any]) -> str:
    """Element puts a mention's display name in `body` and the MXID only in the pill's link in
    `formatted_body`: give commands the MXID, so `!kick Bob` means the Bob that was clicked."""
    formatted = content.get("formatted_body")
    if not isinstance(formatted, str):
        return text
    for mxid, label in pills(formatted):
        if label and label != mxid and label in text:
            text = text.replace(label, mxid, 1)
    return text
