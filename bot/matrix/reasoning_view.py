"""A reasoning model's thinking, for rooms that want to see it: folded (`<details>`) above the
answer, escaped (it is the model's text, never markup), cut to a length that keeps the answer's
event within the homeserver's size limit even encrypted."""

from __future__ import annotations

import html
from typing import Any

from bot.community.markdown import shorten, strip_bidi_controls
from bot.matrix.message_size import fits
from bot.matrix.render import message_content

REASONING_CHARS = 4_000
THINKING = "💭 Thinking…"


def folded_html(reasoning: str) -> str:
    text = html.escape(shorten(strip_bidi_controls(reasoning), REASONING_CHARS))
    return f"<details><summary>Reasoning</summary>{text.replace(chr(10), '<br>')}</details>"


def with_reasoning(content: dict[str, Any], reasoning: str) -> dict[str, Any] | None:
    """`content` (a message or an m.replace edit) with the thinking folded in front of its
    formatted body; None when that would not fit one event."""
    folded = folded_html(reasoning)
    changed = dict(content)
    new = content.get("m.new_content")
    if isinstance(new, dict):
        changed["m.new_content"] = {**new, "formatted_body": folded + new["formatted_body"]}
        changed["formatted_body"] = "* " + folded + new["formatted_body"]
    else:
        changed["formatted_body"] = folded + content["formatted_body"]
    return changed if fits(changed) else None


def reasoning_content(reasoning: str, **relation: Any) -> dict[str, Any]:
    """The thinking as a message of its own (when it does not fit beside the answer)."""
    content = message_content("*(Reasoning)*", **relation)
    content["body"] = "Reasoning: " + shorten(strip_bidi_controls(reasoning), REASONING_CHARS)
    content["formatted_body"] = folded_html(reasoning)
    return content
