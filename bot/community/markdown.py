"""Putting untrusted text (display names, user input) into markdown without it becoming markup."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~&\"'=:@])")


def escape_markdown(text: str) -> str:
    """Backslash-escape every character that markdown (or the HTML after it) could interpret."""
    return _SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def code_span(text: str) -> str:
    """Show text literally as inline code, whatever backticks it contains."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def mention(mxid: str, display_name: str | None = None) -> str:
    """A markdown link that Matrix clients show as a mention pill; pass the MXID in Reply.mentions too."""
    return f"[{escape_markdown(display_name or mxid)}](https://matrix.to/#/{mxid})"
