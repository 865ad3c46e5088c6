"""The one place where replies become Matrix event content: markdown rendered to HTML that is
sanitised to the tags the Matrix spec allows, plus replies, threads, edits and mentions."""

from __future__ import annotations

import re
from typing import Any

import nh3
from markdown_it import MarkdownIt

# Raw HTML in the source is shown as text, never interpreted.
_md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False}).enable(
    ["strikethrough", "table"]
)

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
_MATRIX_TO_LINK = re.compile(r"\[((?:[^\]\\]|\\.)*)\]\(https://matrix\.to/#/[^)\s]+\)")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~&\"'=:@])")


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer",
    )


def markdown_to_html(markdown: str) -> str:
    html = _md.render(markdown).strip()
    # A single paragraph needs no <p> wrapper; Element renders it more compactly.
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return sanitize_html(html)


def markdown_to_plain(markdown: str) -> str:
    """The `body` fallback: the markdown as typed, with mention links reduced to their names."""
    return _MD_ESCAPE.sub(r"\1", _MATRIX_TO_LINK.sub(r"\1", markdown))


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
