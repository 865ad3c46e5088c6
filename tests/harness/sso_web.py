"""The SSO web app served for real on loopback, and a cookie-keeping browser stand-in (httpx)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx

from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.config import load_config
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from tests.harness.bot import write_config
from tests.harness.synapse import free_port
from web_callback.app import create_app, serve


@dataclass
class WebUnderTest:
    base_url: str
    db: Database
    links: LoginLinks
    identity: IdentityService

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"


@contextlib.asynccontextmanager
async def running_web(
    tmp_path: Path,
    providers: list[dict[str, Any]],
    *,
    admins: list[str] = (),  # type: ignore[assignment]
    public_url: str | None = None,
) -> AsyncIterator[WebUnderTest]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    path = write_config(tmp_path / "web.toml", {
        "matrix": {"homeserver": "http://127.0.0.1:9", "user_id": "@bot:test", "password": "x"},
        "data": {"dir": str(tmp_path / "data")},
        "web": {"listen": f"127.0.0.1:{port}", "public_url": public_url or base},
        "roles": {"admins": list(admins)},
        "sso": {"providers": providers},
    })  # fmt: skip
    config = load_config(path)
    db = Database(config.database.url)
    await upgrade_to_head(db)
    runner = await serve(create_app(config, db), "127.0.0.1", port)
    try:
        yield WebUnderTest(
            base,
            db,
            LoginLinks(db, timedelta(minutes=10)),
            IdentityService(db, config.roles.admins),
        )
    finally:
        await runner.cleanup()
        await db.close()


def form_fields(html: str) -> dict[str, str]:
    return {
        unescape(n): unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', html)
    }


class Browser:
    """One browser session: its own cookie jar; redirects are followed by hand."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=15)

    async def close(self) -> None:
        await self.http.aclose()

    async def open_link(self, web: WebUnderTest, token: str) -> httpx.Response:
        return await self.http.get(f"{web.base_url}/login/{token}")

    async def start(
        self, web: WebUnderTest, token: str, provider: str, csrf: str | None = None
    ) -> httpx.Response:
        if csrf is None:
            page = await self.open_link(web, token)
            csrf = form_fields(page.text).get("csrf", "")
        return await self.http.post(
            f"{web.base_url}/login/{token}/start", data={"csrf": csrf, "provider": provider}
        )

    async def through_hostile_provider(self, web: WebUnderTest, token: str, provider: str) -> str:
        """Start the flow and return the callback URL the provider sends the browser to."""
        started = await self.start(web, token, provider)
        assert started.status_code == 303, started.text
        at_provider = await self.http.get(started.headers["location"])
        assert at_provider.status_code in (302, 303), at_provider.text
        return at_provider.headers["location"]

    async def get(self, url: str) -> httpx.Response:
        return await self.http.get(url)
