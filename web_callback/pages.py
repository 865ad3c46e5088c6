"""The few pages people see: small, accessible, no external assets. Every dynamic value is
escaped here; views pass plain text."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape

CSS = """
:root{color-scheme:light dark;--fg:#1b1d21;--bg:#f6f7f9;--card:#fff;--muted:#5b6270;--accent:#0b6e4f;
--bad:#b3261e}
@media (prefers-color-scheme:dark){:root{--fg:#e8eaed;--bg:#15171a;--card:#1f2226;--muted:#a3a9b3;
--accent:#3ddc97;--bad:#ff8a80}}
*{box-sizing:border-box}body{margin:0;min-height:100vh;display:grid;place-items:center;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{width:min(34rem,92vw);background:var(--card);border-radius:14px;padding:2rem 2.2rem;
box-shadow:0 6px 30px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:0 0 .8rem}p{margin:.6rem 0}.muted{color:var(--muted);font-size:.92rem}
.mxid{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;background:rgba(127,127,127,.12);
padding:.1rem .35rem;border-radius:5px;overflow-wrap:anywhere}
form{margin:.6rem 0}button{width:100%;font:inherit;font-weight:600;padding:.75rem 1rem;border:0;
border-radius:10px;background:var(--accent);color:#fff;cursor:pointer}
button:focus-visible{outline:3px solid var(--fg);outline-offset:2px}
.bad h1{color:var(--bad)}
""".strip()

CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def _page(title: str, body: str, *, status: int = 200, bad: bool = False) -> Page:
    main = '<main class="bad">' if bad else "<main>"
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{main}<h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return Page(status, html)


def _mxid(mxid: str) -> str:
    return f'<span class="mxid">{escape(mxid)}</span>'


@dataclass(frozen=True)
class ProviderButton:
    id: str
    name: str


def confirm_page(mxid: str, action: str, csrf: str, providers: list[ProviderButton]) -> Page:
    forms = "".join(
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="provider" value="{escape(p.id)}">'
        f'<button type="submit">Continue with {escape(p.name)}</button></form>'
        for p in providers
    )
    body = (
        f"<p>You are linking {_mxid(mxid)} to your community account.</p>"
        "<p>Sign in with the account you use in the community:</p>"
        f"{forms}"
        '<p class="muted">If you did not ask the bot for this link, close this page.</p>'
    )
    return _page("Link your Matrix account", body)


def success_page(mxid: str, account: str, provider: str, role: str) -> Page:
    body = (
        f"<p>{_mxid(mxid)} is now linked to <strong>{escape(account)}</strong> "
        f"({escape(provider)}), role: <strong>{escape(role)}</strong>.</p>"
        "<p>The bot will confirm in your direct chat. You can close this tab.</p>"
    )
    return _page("You are linked", body)


def problem_page(title: str, message: str, *, status: int, hint: str | None = None) -> Page:
    body = f"<p>{escape(message)}</p>"
    if hint:
        body += f'<p class="muted">{escape(hint)}</p>'
    return _page(title, body, status=status, bad=True)
