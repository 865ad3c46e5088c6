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


_PILL_LINK = re.compile(
    r"""<a\s+href=["']https://matrix\.to/#/((?:@|%40)[^"'/?\s]+)[^"']*["'][^>]*>(.*?)</a>""",
    re.IGNORECASE | re.DOTALL,
)
_TAG = re.compile(r"<[^>]+>")


def resolve_pills(text: str, content: dict[str, Any]) -> str:
    """Element puts a mention's display name in `body` and the MXID only in the pill's link in
    `formatted_body`: give commands the MXID, so `!kick Bob` means the Bob that was clicked."""
    formatted = content.get("formatted_body")
    if not isinstance(formatted, str):
        return text
    from html import unescape
    from urllib.parse import unquote

    for raw_mxid, raw_label in _PILL_LINK.findall(formatted):
        mxid = unquote(raw_mxid)
        label = unescape(_TAG.sub("", raw_label)).strip()
        if label and label != mxid and label in text:
            text = text.replace(label, mxid, 1)
    return text
