"""The one place where replies become Matrix event content: markdown rendered to HTML that is
sanitised to the tags the Matrix spec allows, plus replies, threads, edits and mentions.

Everything here runs in time linear in the text (markdown-it's own parser is kept to bounded
pieces, see message_size.py), so a hostile message echoed back or a model's answer full of
brackets cannot stall the event loop."""

from __future__ import annotations

import html as html_text
import re
from functools import cache
from typing import TYPE_CHECKING, Any

import nh3

if TYPE_CHECKING:
    from markdown_it import MarkdownIt


@cache
def _markdown_it() -> MarkdownIt:
    """Loaded at the first reply that needs it (plain ones, such as `!ping`'s, do not)."""
    from markdown_it import MarkdownIt

    # Raw HTML in the source is shown as text, never interpreted.
    return MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
        ["strikethrough", "table"]
    )


# One line that no markdown construct can start or end in: a letter first, no character that
# opens one (emphasis, code, links, autolinks, entities, escapes, strikethrough, tables, headings,
# quotes), no control character (a line break among them), no trailing space. Markdown renders it
# as the escaped text itself (tests/unit/test_render_plain.py checks this against markdown-it).
# One character class repeated: linear, whatever the text.
_PLAIN = re.compile(r"[^\W\d_][^\x00-\x1f\x7f\\`*_\[\]<>#|~&]*")
_PLAIN_MAX_CHARS = 2000

# https://spec.matrix.org/latest/client-server-api/#mroommessage-msgtypes (m.text HTML subset)
_ALLOWED_TAGS = {
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
    "sub", "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead",
    "tbody", "tr", "th", "td", "caption", "pre", "span", "details", "summary",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "target"},
    "ol": {"start"},
    "code": {"class"},
    "span": {"data-mx-color", "data-mx-bg-color", "data-mx-spoiler"},
    "font": {"data-mx-color", "data-mx-bg-color", "color"},
}
_URL_SCHEMES = {"https", "http", "mailto", "matrix"}
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~&\"'=:@])")
_MENTION_TAIL = "](https://matrix.to/#/"
# The rest of a mention link after its tail: an MXID (at most 255 bytes, maybe percent-encoded)
# and the closing parenthesis. Bounded, so a tail that is never closed costs a fixed amount.
_MENTION_TARGET = re.compile(r"[^)\s]{1,800}\)")
_BRACKETS = re.compile(r"[\\\[\]]")


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer",
    )


def markdown_to_html(markdown: str) -> str:
    if is_plain(markdown):
        return sanitize_html(html_text.escape(markdown, quote=False))
    return rendered(markdown)


def rendered(markdown: str) -> str:
    """`markdown` through markdown-it, sanitised."""
    html = _markdown_it().render(markdown).strip()
    # A single paragraph needs no <p> wrapper; Element renders it more compactly.
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return sanitize_html(html)


def is_plain(markdown: str) -> bool:
    """Whether `markdown` renders as itself (escaped), without markdown-it."""
    return (
        len(markdown) <= _PLAIN_MAX_CHARS
        and _PLAIN.fullmatch(markdown) is not None
        and not markdown[-1].isspace()
    )


def _reduce_mention_links(markdown: str) -> str:
    """`[label](https://matrix.to/#/@id)` becomes `label`, in one pass over the text: the label
    starts at the first unescaped `[` since the last `]`, as a link label would."""
    if _MENTION_TAIL not in markdown:
        return markdown
    pieces: list[str] = []
    copied = 0  # markdown[:copied] is in pieces
    opener = -1
    skip_to = 0  # the character after a backslash is literal
    for found in _BRACKETS.finditer(markdown):
        i = found.start()
        if i < skip_to:
            continue
        char = markdown[i]
        if char == "\\":
            skip_to = i + 2
        elif char == "[":
            if opener < 0:
                opener = i
        elif opener >= 0:  # "]"
            target_at = i + len(_MENTION_TAIL)
            target = (
                _MENTION_TARGET.match(markdown, target_at)
                if markdown.startswith(_MENTION_TAIL, i)
                else None
            )
            if target is not None:
                pieces += [markdown[copied:opener], markdown[opener + 1 : i]]
                copied = skip_to = target.end()
            opener = -1
    pieces.append(markdown[copied:])
    return "".join(pieces)


def markdown_to_plain(markdown: str) -> str:
    """The `body` fallback: the markdown as typed, with mention links reduced to their names."""
    return _MD_ESCAPE.sub(r"\1", _reduce_mention_links(markdown))


def message_content(
    markdown: str,
    *,
    msgtype: str = "m.notice",
    mentions: tuple[str, ...] | list[str] = (),
    reply_to: str | None = None,
    thread_root: str | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": msgtype,
        "body": markdown_to_plain(markdown),
        "format": "org.matrix.custom.html",
        "formatted_body": markdown_to_html(markdown),
        # Always present, so clients never infer a mention (or @room) from the text.
        "m.mentions": {"user_ids": sorted(set(mentions))} if mentions else {},
    }
    if thread_root is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": reply_to is None,
            "m.in_reply_to": {"event_id": reply_to or thread_root},
        }
    elif reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def edit_content(original_event_id: str, new: dict[str, Any]) -> dict[str, Any]:
    """An m.replace edit of a message we sent; `new` is full content as from message_content()."""
    replacement = {k: v for k, v in new.items() if k != "m.relates_to"}
    content = dict(replacement)
    content["body"] = f"* {new['body']}"
    if "formatted_body" in new:
        content["formatted_body"] = f"* {new['formatted_body']}"
    content["m.new_content"] = replacement
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": original_event_id}
    return content
