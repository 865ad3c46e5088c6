"""Debian's Chromium runs under Playwright (the ``chromium`` fixture) and renders the provider's pages."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Route

from tests.harness.hostile_oidc import s256
from tests.harness.oidc import OidcProvider

REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> OidcProvider:
    server = OidcProvider(
        tmp_path_factory.mktemp("oidc-chromium"),
        clients=[
            {"client_id": "browser", "client_secret": "secret", "redirect_uris": [REDIRECT_URI]}
        ],
        accounts={"carol": {"email": "carol@corp.test", "groups": ["staff"]}},
    )
    server.start()
    yield server
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
    """The real login and consent pages, clicked through; the redirect to the client is caught
    with ``page.route`` (nothing listens there)."""
    verifier = secrets.token_urlsafe(32)
    state = secrets.token_urlsafe(8)
    url = f"{provider.authorization_endpoint}?" + urlencode(
        {
            "client_id": "browser",
            "response_type": "code",
            "scope": "openid email groups",
            "redirect_uri": REDIRECT_URI,
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
    )
    context = await chromium.new_context()
    # The dev pages @import Google Fonts: no need to wait for the network.
    await context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    caught: list[str] = []

    async def callback(route: Route) -> None:
        caught.append(route.request.url)
        await route.fulfill(status=200, content_type="text/plain", body="callback reached")

    await context.route(f"{REDIRECT_URI}**", callback)
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
    await page.wait_for_url(f"{REDIRECT_URI}**")
    elapsed = time.monotonic() - started
    await context.close()
    assert len(caught) == 1 and f"state={state}" in caught[0] and "code=" in caught[0]
    assert elapsed < 10
    assert (artifacts_dir / "login.png").stat().st_size > 0
