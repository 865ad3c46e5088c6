"""ID-token checks of the SSO web app, over real HTTP: extra audiences (refused unless listed in
``trusted_audiences``) and tokens without ``kid`` (verified by trying the published keys of the
right type, one JWKS refetch at most). The hostile provider signs and tampers; the real
node-oidc-provider shows the setting does not disturb a normal login."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from sqlalchemy import func, select

from bot.store.models import Identity, LoginLink
from tests.harness.hostile_oidc import HostileOidcProvider, _b64url, _b64url_decode
from tests.harness.oidc import complete_login
from tests.harness.sso_web import Browser, WebUnderTest, running_web

ALICE = "@alice:example.org"
OTHER_API = "community-api"


@functools.cache
def key(name: str) -> Key:
    """Test keys, made once per process, each with its own kid."""
    kind, _, detail = name.partition("-")
    parameters: Any = {"kid": f"test-{name}", "use": "sig"}
    if kind == "rsa":
        return RSAKey.generate_key(2048, parameters=parameters)
    if kind == "ec":
        return ECKey.generate_key(detail, parameters=parameters)  # type: ignore[arg-type]
    return OKPKey.generate_key(detail, parameters=parameters)  # type: ignore[arg-type]


def header_of(id_token: str) -> dict[str, Any]:
    return json.loads(_b64url_decode(id_token.split(".")[0]))


async def bound(web: WebUnderTest) -> int:
    async with web.db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(Identity))


async def link_unused(web: WebUnderTest, token: str) -> bool:
    async with web.db.transaction() as session:
        link = await session.get(LoginLink, hashlib.sha256(token.encode()).hexdigest())
        return link.used_at is None


@pytest.fixture
async def hostile():
    async with HostileOidcProvider() as provider:
        yield provider


def hostile_settings(hostile: HostileOidcProvider, **extra: Any) -> list[dict[str, Any]]:
    return [{
        "id": "hostile", "name": "Hostile IdP", "issuer": hostile.issuer,
        "client_id": hostile.client_id, "client_secret": hostile.client_secret, **extra,
    }]  # fmt: skip


@pytest.fixture
async def plain_web(hostile, tmp_path):
    """The web app with the provider's default settings: no trusted audiences."""
    async with running_web(tmp_path, hostile_settings(hostile)) as web:
        yield web


@pytest.fixture
async def trusting_web(hostile, tmp_path):
    async with running_web(
        tmp_path, hostile_settings(hostile, trusted_audiences=[OTHER_API])
    ) as web:
        yield web


async def sign_in(web: WebUnderTest, mxid: str = ALICE) -> tuple[str, Any]:
    """One whole login through the hostile provider: (link token, callback response)."""
    browser = Browser()
    try:
        token = await web.links.issue(mxid)
        page = await browser.get(await browser.through_hostile_provider(web, token, "hostile"))
    finally:
        await browser.close()
    return token, page


async def assert_refused(web: WebUnderTest, token: str, page: Any) -> None:
    assert page.status_code == 400
    assert "We could not verify your sign-in" in page.text and "Traceback" not in page.text
    assert await bound(web) == 0
    assert await link_unused(web, token)


async def assert_linked(web: WebUnderTest, hostile: HostileOidcProvider, page: Any) -> None:
    assert page.status_code == 200, page.text
    assert "You are linked" in page.text
    [binding] = await web.identity.bindings_of(ALICE)
    assert (binding.issuer, binding.subject) == (hostile.issuer, hostile.subject)


# -- audiences ----------------------------------------------------------------------------------


async def test_an_extra_untrusted_audience_is_refused(hostile, plain_web):
    # Everything else is right: signature, iss, nonce, and azp naming us.
    hostile.extra_claims = {"aud": [hostile.client_id, OTHER_API], "azp": hostile.client_id}
    token, page = await sign_in(plain_web)
    await assert_refused(plain_web, token, page)
    assert hostile.requests["token"] == 1


async def test_an_extra_audience_listed_in_trusted_audiences_is_accepted(hostile, trusting_web):
    hostile.extra_claims = {"aud": [hostile.client_id, OTHER_API], "azp": hostile.client_id}
    _token, page = await sign_in(trusting_web)
    await assert_linked(trusting_web, hostile, page)


@pytest.mark.parametrize(
    "claims",
    [
        # one trusted extra audience, one untrusted
        {"aud": ["hostile-client", OTHER_API, "someone-else"], "azp": "hostile-client"},
        # only trusted audiences, but not us
        {"aud": [OTHER_API]},
        {"aud": OTHER_API, "azp": "hostile-client"},
        # several audiences: azp must still be us
        {"aud": ["hostile-client", OTHER_API]},
        {"aud": ["hostile-client", OTHER_API], "azp": OTHER_API},
        # not a list of strings
        {"aud": ["hostile-client", {"aud": OTHER_API}], "azp": "hostile-client"},
    ],
)
async def test_trusted_audiences_do_not_open_other_doors(claims, hostile, trusting_web):
    assert hostile.client_id == "hostile-client"
    hostile.extra_claims = claims
    token, page = await sign_in(trusting_web)
    await assert_refused(trusting_web, token, page)


# -- tokens without kid -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "signer"),
    [
        # RS256: the first RSA key does not verify, the second does
        (["rsa-a", "rsa-b", "ec-P-256"], "rsa-b"),
        # ES256: the P-384 key is not a candidate, the P-256 key is
        (["ec-P-384", "ec-P-256", "rsa-a"], "ec-P-256"),
        # EdDSA: only the OKP key is a candidate
        (["rsa-a", "okp-Ed25519", "ec-P-256"], "okp-Ed25519"),
    ],
)
async def test_a_kidless_token_is_verified_by_the_matching_published_key(
    published, signer, hostile, plain_web
):
    hostile.published_keys = [key(name) for name in published]
    hostile.signing_key = key(signer)
    hostile.kid_in_header = False
    _token, page = await sign_in(plain_web)
    assert "kid" not in header_of(hostile.issued_id_tokens[-1])
    await assert_linked(plain_web, hostile, page)
    assert hostile.requests["jwks"] == 1  # the keys were all there: no refetch


@pytest.mark.parametrize("signer", ["unpublished-rsa", "ec-P-256"])
async def test_a_kidless_token_signed_by_an_unpublished_key_is_refused_after_one_refetch(
    signer, hostile, plain_web
):
    hostile.published_keys = [key("rsa-a"), key("rsa-b"), key("ec-P-384")]
    if signer == "unpublished-rsa":
        hostile.mode = "unknown_kid"  # signed with a key the JWKS never shows
    else:
        hostile.signing_key = key(signer)  # of a type and curve that no published key has
    hostile.kid_in_header = False
    token, page = await sign_in(plain_web)
    assert "kid" not in header_of(hostile.issued_id_tokens[-1])
    await assert_refused(plain_web, token, page)
    assert hostile.requests["jwks"] == 2  # exactly one refetch, then no more


async def test_a_kidless_token_from_a_rotated_key_is_accepted_after_one_refetch(hostile, plain_web):
    hostile.published_keys = [key("ec-P-256"), key("rsa-a")]
    hostile.mode = "unknown_kid_rotated"  # the rotated key is published from the second /jwks on
    hostile.kid_in_header = False
    _token, page = await sign_in(plain_web)
    assert "kid" not in header_of(hostile.issued_id_tokens[-1])
    await assert_linked(plain_web, hostile, page)
    assert hostile.requests["jwks"] == 2


@pytest.mark.parametrize("mode", ["hs256", "alg_none"])
async def test_a_kidless_symmetric_or_unsigned_token_is_refused(mode, hostile, plain_web):
    # Even when the JWKS carries the HMAC key itself next to the RSA keys.
    hostile.published_keys = [
        key("rsa-a"), OctKey.import_key(hostile.client_secret, {"kid": "hmac"}), key("rsa-b")
    ]  # fmt: skip
    hostile.mode = mode
    token, page = await sign_in(plain_web)
    header = header_of(hostile.issued_id_tokens[-1])
    assert "kid" not in header and header["alg"] in ("HS256", "none")
    await assert_refused(plain_web, token, page)
    assert hostile.requests["jwks"] == 1  # refused on its algorithm, without refetching


async def test_a_token_with_a_kid_is_checked_against_that_key_only(hostile, plain_web, monkeypatch):
    # Signed by rsa-b, but naming rsa-a: no falling back to the other published keys.
    hostile.published_keys = [key("rsa-a"), key("rsa-b")]
    hostile.signing_key = key("rsa-b")
    make = hostile.make_id_token

    def naming_rsa_a(nonce: str) -> str:
        made = make(nonce)
        header = {**header_of(made), "kid": key("rsa-a").kid}
        return f"{_b64url(json.dumps(header).encode())}.{made.split('.', 1)[1]}"

    monkeypatch.setattr(hostile, "make_id_token", naming_rsa_a)
    token, page = await sign_in(plain_web)
    assert header_of(hostile.issued_id_tokens[-1])["kid"] == "test-rsa-a"
    await assert_refused(plain_web, token, page)
    assert hostile.requests["jwks"] == 1  # a known kid: no refetch


# -- the real provider ---------------------------------------------------------------------------


async def test_node_oidc_provider_login_still_binds_with_trusted_audiences_set(
    oidc_provider, tmp_path
):
    oidc_provider.set_account("alice", email="alice@example.org", groups=["staff"])
    providers = [{
        "id": "community", "issuer": oidc_provider.issuer,
        "client_id": "bot-web-aud", "client_secret": "bot-web-aud-secret-0123456789",
        "trusted_audiences": [OTHER_API],
    }]  # fmt: skip
    async with running_web(tmp_path, providers) as web:
        oidc_provider.add_client("bot-web-aud", "bot-web-aud-secret-0123456789", [web.redirect_uri])
        browser = Browser()
        try:
            token = await web.links.issue(ALICE)
            started = await browser.start(web, token, "community")
            leaving = await complete_login(
                browser.http, started.headers["location"], username="alice"
            )
            page = await browser.get(leaving.headers["location"])
        finally:
            await browser.close()
        assert page.status_code == 200 and "You are linked" in page.text, page.text
        [binding] = await web.identity.bindings_of(ALICE)
        assert (binding.issuer, binding.subject) == (oidc_provider.issuer, "alice")
