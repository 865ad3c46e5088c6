"""The login flow over real HTTP: the real node-oidc-provider for the happy path and the provider's
own errors, a hostile provider of our own for every token-tampering case. Whatever goes wrong,
nothing is bound, the link keeps its state and the page says what to do."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.community.roles import Role
from bot.community.users import UserService
from bot.store.models import Identity, LoginLink
from tests.harness.hostile_oidc import HostileOidcProvider
from tests.harness.oidc import complete_login
from tests.harness.sso_web import Browser, form_fields, running_web

ALICE = "@alice:example.org"


async def bound(web) -> int:
    async with web.db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(Identity))


@pytest.fixture
async def hostile():
    async with HostileOidcProvider(groups=["mods"]) as provider:
        yield provider


@pytest.fixture
async def hostile_web(hostile, tmp_path):
    providers = [{
        "id": "hostile", "name": "Hostile IdP", "issuer": hostile.issuer,
        "client_id": hostile.client_id, "client_secret": hostile.client_secret,
        "moderator_groups": ["mods"],
    }]  # fmt: skip
    async with running_web(tmp_path, providers) as web:
        yield web


@pytest.fixture
async def browser():
    b = Browser()
    yield b
    await b.close()


# -- the happy path against the real, OpenID-certified provider -------------------------------


async def test_full_flow_with_node_oidc_provider_binds_with_role_from_groups(
    oidc_provider, tmp_path, browser
):
    oidc_provider.set_account(
        "alice", email="alice@example.org", name="Alice", groups=["admins", "staff"]
    )
    providers = [{
        "id": "community", "name": "Community SSO", "issuer": oidc_provider.issuer,
        "client_id": "bot-web", "client_secret": "bot-web-secret-0123456789",
        "scopes": ["openid", "profile", "email", "groups"], "admin_groups": ["admins"],
    }]  # fmt: skip
    async with running_web(tmp_path, providers) as web:
        oidc_provider.add_client("bot-web", "bot-web-secret-0123456789", [web.redirect_uri])
        token = await web.links.issue(ALICE)
        page = await browser.open_link(web, token)
        assert page.status_code == 200
        assert 'You are linking <span class="mxid">@alice:example.org</span>' in page.text
        assert "Continue with Community SSO" in page.text
        started = await browser.start(web, token, "community")
        assert started.status_code == 303
        location = started.headers["location"]
        assert location.startswith(f"{oidc_provider.issuer}/auth?")
        assert "code_challenge_method=S256" in location and "nonce=" in location

        leaving = await complete_login(browser.http, location, username="alice")
        callback = await browser.get(leaving.headers["location"])
        assert callback.status_code == 200, callback.text
        assert "You are linked" in callback.text and "role: <strong>admin</strong>" in callback.text

        [binding] = await web.identity.bindings_of(ALICE)
        assert (binding.issuer, binding.subject) == (oidc_provider.issuer, "alice")
        assert binding.email == "alice@example.org" and set(binding.groups) == {"admins", "staff"}
        assert await UserService(web.db, []).role_of(ALICE) is Role.ADMIN
        # The flow cookie is gone: the callback cannot be replayed.
        again = await browser.get(leaving.headers["location"])
        assert again.status_code == 400 and await bound(web) == 1


async def test_provider_error_access_denied_binds_nothing(oidc_provider, tmp_path, browser):
    providers = [{
        "id": "community", "issuer": oidc_provider.issuer,
        "client_id": "bot-web-2", "client_secret": "bot-web-secret-2-0123456789",
    }]  # fmt: skip
    async with running_web(tmp_path, providers) as web:
        oidc_provider.add_client("bot-web-2", "bot-web-secret-2-0123456789", [web.redirect_uri])
        token = await web.links.issue(ALICE)
        started = await browser.start(web, token, "community")
        leaving = await complete_login(
            browser.http, started.headers["location"], username="alice", consent=False
        )
        page = await browser.get(leaving.headers["location"])
        assert page.status_code == 400
        assert "Community did not sign you in" in page.text and "access_denied" in page.text
        assert await bound(web) == 0
        assert (
            await web.links.inspect(token, browser.http.cookies.get("cb_browser"))
        ).mxid == ALICE


# -- tampered tokens from the hostile provider -------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    ["wrong_aud", "wrong_iss", "bad_signature", "alg_none", "hs256", "expired", "wrong_nonce",
     "userinfo_sub_mismatch", "unknown_kid"],
)  # fmt: skip
async def test_tampered_id_tokens_are_refused(mode, hostile, hostile_web, browser):
    web = hostile_web
    hostile.mode = mode
    token = await web.links.issue(ALICE)
    callback_url = await browser.through_hostile_provider(web, token, "hostile")
    page = await browser.get(callback_url)
    assert page.status_code == 400
    assert "We could not verify your sign-in" in page.text
    assert "Traceback" not in page.text and hostile.client_secret not in page.text
    assert await bound(web) == 0
    async with web.db.transaction() as session:
        link = await session.get(
            LoginLink, __import__("hashlib").sha256(token.encode()).hexdigest()
        )
        assert link.used_at is None
    if mode == "unknown_kid":
        assert hostile.requests["jwks"] == 2  # one refetch on an unknown key id, not more


async def test_rotated_key_is_accepted_after_one_jwks_refetch(hostile, hostile_web, browser):
    hostile.mode = "unknown_kid_rotated"
    token = await hostile_web.links.issue(ALICE)
    page = await browser.get(await browser.through_hostile_provider(hostile_web, token, "hostile"))
    assert page.status_code == 200 and "You are linked" in page.text
    assert hostile.requests["jwks"] == 2
    assert await UserService(hostile_web.db, []).role_of(ALICE) is Role.MODERATOR


async def test_pkce_and_nonce_reach_the_provider(hostile, hostile_web, browser):
    token = await hostile_web.links.issue(ALICE)
    await browser.through_hostile_provider(hostile_web, token, "hostile")
    request = hostile.authorize_requests[-1]
    assert request["code_challenge_method"] == "S256" and len(request["code_challenge"]) == 43
    assert len(request["nonce"]) >= 32 and len(request["state"]) >= 32


# -- links, browsers and cookies --------------------------------------------------------------


async def test_unknown_expired_and_reused_links(hostile, hostile_web, browser):
    web = hostile_web
    unknown = await browser.open_link(web, "not-a-real-token")
    assert unknown.status_code == 404 and "This link is not valid" in unknown.text
    assert "Send !login to the bot" in unknown.text

    token = await web.links.issue(ALICE)
    assert (
        await browser.get(await browser.through_hostile_provider(web, token, "hostile"))
    ).status_code == 200
    reused = await browser.open_link(web, token)
    assert reused.status_code == 410 and "already used" in reused.text

    from datetime import timedelta

    from sqlalchemy import update

    from bot.store.models import utcnow

    expired_token = await web.links.issue("@bob:example.org")
    async with web.db.transaction() as session:
        await session.execute(update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=5)))
    expired = await browser.open_link(web, expired_token)
    assert expired.status_code == 410 and "expired" in expired.text
    assert (await browser.start(web, expired_token, "hostile", csrf="x")).status_code == 403
    assert await bound(web) == 1


async def test_state_mismatch_and_missing_cookie_bind_nothing(hostile, hostile_web, browser):
    web = hostile_web
    token = await web.links.issue(ALICE)
    callback_url = await browser.through_hostile_provider(web, token, "hostile")
    tampered = callback_url.replace("state=", "state=x")
    page = await browser.get(tampered)
    assert page.status_code == 400 and "does not match this browser" in page.text

    token = await web.links.issue(ALICE)
    callback_url = await browser.through_hostile_provider(web, token, "hostile")
    stranger = Browser()
    try:
        page = await stranger.get(callback_url)  # no flow cookie, no browser cookie
    finally:
        await stranger.close()
    assert page.status_code == 400 and "started in another browser" in page.text
    assert await bound(web) == 0


async def test_a_link_started_in_one_browser_cannot_be_used_in_another(
    hostile, hostile_web, browser
):
    web = hostile_web
    token = await web.links.issue(ALICE)
    started = await browser.start(web, token, "hostile")
    assert started.status_code == 303
    thief = Browser()
    try:
        assert (await thief.open_link(web, token)).status_code == 403
        assert (await thief.start(web, token, "hostile")).status_code in (400, 403)
        # Even with the first browser's answer from the provider, the thief's browser gets nothing.
        at_provider = await browser.get(started.headers["location"])
        stolen = await thief.get(at_provider.headers["location"])
        assert stolen.status_code == 400
        assert await bound(web) == 0
    finally:
        await thief.close()


async def test_identity_already_linked_to_another_mxid_is_refused(hostile, hostile_web, browser):
    web = hostile_web
    first = await web.links.issue(ALICE)
    assert (
        await browser.get(await browser.through_hostile_provider(web, first, "hostile"))
    ).status_code == 200
    other = Browser()
    try:
        second = await web.links.issue("@mallory:example.org")
        page = await other.get(await other.through_hostile_provider(web, second, "hostile"))
    finally:
        await other.close()
    assert page.status_code == 409
    assert "is linked to @alice:example.org" in page.text and "Nothing was changed" in page.text
    assert await web.identity.bindings_of("@mallory:example.org") == []
    assert await bound(web) == 1


async def test_csrf_and_unknown_provider(hostile_web, browser):
    web = hostile_web
    token = await web.links.issue(ALICE)
    await browser.open_link(web, token)
    assert (await browser.start(web, token, "hostile", csrf="forged")).status_code == 403
    page = await browser.open_link(web, token)
    assert (
        await browser.start(web, token, "nope", csrf=form_fields(page.text)["csrf"])
    ).status_code == 400
    no_cookie = Browser()
    try:
        assert (await no_cookie.start(web, token, "hostile", csrf="x")).status_code == 400
    finally:
        await no_cookie.close()


async def test_every_page_has_security_headers_and_errors_leak_nothing(hostile_web, browser):
    web = hostile_web
    token = await web.links.issue(ALICE)
    for response in (
        await browser.open_link(web, token),
        await browser.open_link(web, "bogus"),
        await browser.get(f"{web.base_url}/callback"),
        await browser.get(f"{web.base_url}/nothing-here"),
        await browser.get(f"{web.base_url}/healthz"),
    ):
        headers = response.headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        # form-action would block the sign-in redirect in Chromium for providers whose login
        # pages live on other origins (Cognito, Keycloak brokering): it must not be there.
        assert "form-action" not in headers["content-security-policy"]
        assert "Traceback" not in response.text
    health = await browser.get(f"{web.base_url}/healthz")
    assert health.json() == {"status": "ok"}
    cookie = next(c for c in browser.http.cookies.jar if c.name == "cb_browser")
    assert (
        cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Lax"
    )


async def test_https_deployments_get_host_prefixed_secure_cookies(hostile, tmp_path):
    from tests.harness.sso_web import running_web as serve_web

    providers = [{
        "id": "hostile", "issuer": hostile.issuer,
        "client_id": hostile.client_id, "client_secret": hostile.client_secret,
    }]  # fmt: skip
    async with serve_web(tmp_path, providers, public_url="https://bot.example.org") as web:
        token = await web.links.issue(ALICE)
        import httpx

        async with httpx.AsyncClient() as http:
            page = await http.get(f"{web.base_url}/login/{token}")
        set_cookie = page.headers["set-cookie"]
        assert set_cookie.startswith("__Host-cb_browser=")
        assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "Path=/" in set_cookie
        assert "Domain" not in set_cookie and "SameSite=Lax" in set_cookie


async def test_a_strangers_callback_does_not_cancel_a_flow(hostile, hostile_web, browser):
    web = hostile_web
    token = await web.links.issue(ALICE)
    started = await browser.start(web, token, "hostile")
    # A page elsewhere sends this browser to the callback with a made-up state.
    forged = await browser.get(f"{web.base_url}/callback?state=forged&code=x")
    assert forged.status_code == 400 and "set-cookie" not in forged.headers
    at_provider = await browser.get(started.headers["location"])
    done = await browser.get(at_provider.headers["location"])
    assert done.status_code == 200 and "You are linked" in done.text


async def test_an_authorized_party_other_than_us_is_refused(hostile, hostile_web, browser):
    hostile.extra_claims = {"azp": "some-other-client"}
    token = await hostile_web.links.issue(ALICE)
    page = await browser.get(await browser.through_hostile_provider(hostile_web, token, "hostile"))
    assert page.status_code == 400 and await bound(hostile_web) == 0
