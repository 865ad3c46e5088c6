"""Putting untrusted text (display names, room names, user input) into markdown without it becoming
markup, reversing the text around it, or growing the reply without bound."""

from __future__ import annotations

import re

# Every character that markdown (or the HTML after it) could interpret, backslash-escaped.
_ESCAPED = {ord(c): "\\" + c for c in "\\`*_{}[]()#+-.!<>|~&\"'=:@"} | {ord("\n"): " "}
# Explicit direction marks, embeddings, overrides and isolates: in a name they would reorder the
# text that follows it (an RLO turns "joined the room" around).
_BIDI_CONTROLS = dict.fromkeys(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
# Isolate controls could close (or leave open) the isolate a name is wrapped in: they go. The
# others may stay inside it: a closing isolate ends every embedding and override begun within.
_ISOLATE_CONTROLS = dict.fromkeys(range(0x2066, 0x206A))
_DIRECTION_CHANGES = re.compile("[\u061c\u200e\u200f\u202a-\u202e]")
_FIRST_STRONG_ISOLATE, _POP_ISOLATE = "\u2068", "\u2069"
# Scripts written right to left (Hebrew, Arabic, Syriac, Thaana, N'Ko, Samaritan, Mandaic, their
# presentation forms, and the RTL blocks of the supplementary planes).
_RIGHT_TO_LEFT = re.compile(
    "[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff\U0001e800-\U0001efff]"
)
ECHO_LIMIT = 80  # characters of member input quoted back in a reply


def strip_bidi_controls(text: str) -> str:
    return text.translate(_BIDI_CONTROLS)


def _has_right_to_left(text: str) -> bool:
    return _RIGHT_TO_LEFT.search(text) is not None


def isolate(text: str) -> str:
    """Text whose direction cannot leak into what surrounds it: right-to-left text, or text with
    direction controls, is wrapped in a first-strong isolate (FSI ... PDI); plain left-to-right
    text is left as it is."""
    text = text.translate(_ISOLATE_CONTROLS)
    if _has_right_to_left(text) or _DIRECTION_CHANGES.search(text):
        return f"{_FIRST_STRONG_ISOLATE}{text}{_POP_ISOLATE}"
    return text


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """At most `limit` characters; a cut is marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(text: str, limit: int = ECHO_LIMIT) -> str:
    """Member input quoted back in a reply (an error message): short, direction-safe, inert."""
    literal = repr(shorten(strip_bidi_controls(text), limit))
    return f"{literal[0]}{escape_markdown(literal[1:-1])}{literal[-1]}"


def escape_markdown(text: str) -> str:
    """Backslash-escape every character that markdown (or the HTML after it) could interpret;
    isolated, so a name's direction does not reorder the sentence around it."""
    return isolate(text).translate(_ESCAPED)


def code_span(text: str) -> str:
    """Show text literally as inline code, whatever backticks it contains."""
    text = strip_bidi_controls(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def mention(mxid: str, display_name: str | None = None) -> str:
    """A markdown link that Matrix clients show as a mention pill; pass the MXID in Reply.mentions too."""
    return f"[{escape_markdown(display_name or mxid)}](https://matrix.to/#/{mxid})"
