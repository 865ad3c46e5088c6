"""Debian's Chromium runs under Playwright (the ``chromium`` fixture) and renders the provider's pages."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from playwright.async_api import Browser

from tests.harness.hostile_oidc import s256
from tests.harness.oidc import OidcProvider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    server = OidcProvider(
        tmp_path_factory.mktemp("oidc-chromium"),
        accounts={"carol": {"email": "carol@corp.test", "groups": ["staff"]}},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_chromium_screenshot(
    chromium: Browser, provider: OidcProvider, artifacts_dir: Path
) -> None:
    page = await chromium.new_page()
    response = await page.goto(provider.discovery_url)
    assert response is not None and response.ok
    assert provider.issuer in await page.content()
    screenshot = artifacts_dir / "discovery.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_chromium_login_pages(
    chromium: Browser, provider: OidcProvider, artifacts_dir: Path
) -> None:
    """The real login and consent pages, clicked through, back to a tiny callback server.

    (A real listener, not ``page.route``: fulfilling the intercepted redirect costs ≈ 1.1 s.)"""
    reached: list[dict[str, str]] = []

    async def callback(request: web.Request) -> web.Response:
        reached.append(dict(request.query))
        return web.Response(text="callback reached")

    app = web.Application()
    app.router.add_get("/oidc/callback", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    redirect_uri = f"http://127.0.0.1:{runner.addresses[0][1]}/oidc/callback"
    provider.add_client("browser", "secret", [redirect_uri])
    verifier = secrets.token_urlsafe(32)
    state = secrets.token_urlsafe(8)
    url = f"{provider.authorization_endpoint}?" + urlencode(
        {
            "client_id": "browser",
            "response_type": "code",
            "scope": "openid email groups",
            "redirect_uri": redirect_uri,
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
    )
    context = await chromium.new_context()
    try:
        # The dev pages @import Google Fonts: don't wait for the network.
        await context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
        page = await context.new_page()
        started = time.monotonic()
        await page.goto(url)
        await page.fill("input[name=login]", "carol")
        await page.fill("input[name=password]", "pw")
        await page.screenshot(path=str(artifacts_dir / "login.png"))
        await page.click("button[type=submit]")
        await page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
        await page.screenshot(path=str(artifacts_dir / "consent.png"))
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{redirect_uri}?**")
        elapsed = time.monotonic() - started
        assert "callback reached" in await page.content()
    finally:
        await context.close()
        await runner.cleanup()
    assert len(reached) == 1
    assert reached[0]["state"] == state and reached[0]["code"]
    assert elapsed < 5
    for name in ("login.png", "consent.png"):
        assert (artifacts_dir / name).stat().st_size > 0
