"""The OpenID harness works: node-oidc-provider (real pages, driven over HTTP) and the hostile
provider (tampered tokens)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tests.harness.hostile_oidc import MODES, HostileOidcProvider, s256
from tests.harness.oidc import OidcProvider, complete_login

REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"  # never fetched: complete_login stops before it
CLIENT_ID = "harness-client"
CLIENT_SECRET = "harness-secret"
ACCOUNTS = {"alice": {"email": "alice@corp.test", "name": "Alice A.", "groups": ["staff", "mods"]}}


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWS compact token, signature NOT checked."""

    def part(segment: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    header, payload, _signature = token.split(".")
    return part(header), part(payload)


def authorize_url(endpoint: str, client_id: str, **extra: str) -> tuple[str, str, str, str]:
    """(url, state, nonce, code_verifier) for a code flow with PKCE S256."""
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier = secrets.token_urlsafe(32)  # RFC 7636: 43..128 characters
    params = {
        "client_id": client_id,
        "response_type": "code",
        "scope": "openid email profile groups",
        "redirect_uri": REDIRECT_URI,
        "state": state,
        "nonce": nonce,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{endpoint}?{urlencode(params)}", state, nonce, verifier


def callback_params(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# -- node-oidc-provider --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(
        tmp_path_factory.mktemp("oidc"),
        clients=[
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [REDIRECT_URI],
            }
        ],
        accounts=ACCOUNTS,
    )
    started = time.monotonic()
    provider.start()
    provider.start_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    try:
        yield provider
    finally:
        provider.stop()


def test_node_provider_starts_fast_and_serves_discovery(node_provider: OidcProvider) -> None:
    assert node_provider.start_seconds < 3  # type: ignore[attr-defined]
    document = httpx.get(node_provider.discovery_url).json()
    assert document["issuer"] == node_provider.issuer
    assert document["authorization_endpoint"] == node_provider.authorization_endpoint
    assert document["token_endpoint"] == node_provider.token_endpoint
    assert document["jwks_uri"] == node_provider.jwks_uri
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "groups" in document["scopes_supported"]
    assert "groups" in document["claims_supported"]


async def test_node_code_flow_with_pkce(node_provider: OidcProvider) -> None:
    url, state, nonce, verifier = authorize_url(node_provider.authorization_endpoint, CLIENT_ID)
    async with httpx.AsyncClient(timeout=10) as http:
        started = time.monotonic()
        response = await complete_login(http, url, username="alice")
        assert time.monotonic() - started < 2
        assert response.status_code in (302, 303)
        params = callback_params(response)
        assert params["state"] == state
        assert params["iss"] == node_provider.issuer  # RFC 9207
        token = await http.post(
            node_provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),  # client_secret_basic
        )
        assert token.status_code == 200, token.text
        body = token.json()
        header, claims = unverified(body["id_token"])
        assert header["alg"] == "RS256"
        assert claims["sub"] == "alice"
        assert claims["aud"] == CLIENT_ID
        assert claims["iss"] == node_provider.issuer
        assert claims["nonce"] == nonce
        assert claims["email"] == "alice@corp.test"
        assert claims["name"] == "Alice A."
        assert claims["preferred_username"] == "alice"
        assert claims["groups"] == ["staff", "mods"]
        # The signature checks out against the published keys.
        keys = KeySet.import_key_set((await http.get(node_provider.jwks_uri)).json())
        assert jwt.decode(body["id_token"], keys).claims["sub"] == "alice"

        userinfo = await http.get(
            node_provider.userinfo_endpoint,
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert userinfo.json()["groups"] == ["staff", "mods"]

        # The code is single use.
        again = await http.post(
            node_provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert again.json()["error"] == "invalid_grant"


async def test_node_wrong_pkce_verifier_is_refused(node_provider: OidcProvider) -> None:
    url, _state, _nonce, _verifier = authorize_url(node_provider.authorization_endpoint, CLIENT_ID)
    async with httpx.AsyncClient(timeout=10) as http:
        params = callback_params(await complete_login(http, url, username="alice"))
        token = await http.post(
            node_provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": secrets.token_urlsafe(32),
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_grant"


async def test_node_requires_pkce(node_provider: OidcProvider) -> None:
    url, _state, _nonce, _verifier = authorize_url(node_provider.authorization_endpoint, CLIENT_ID)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    del query["code_challenge"], query["code_challenge_method"]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{node_provider.authorization_endpoint}?{urlencode(query)}")
    params = callback_params(response)
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]


async def test_node_unknown_user_gets_defaults(node_provider: OidcProvider) -> None:
    url, _state, _nonce, verifier = authorize_url(node_provider.authorization_endpoint, CLIENT_ID)
    async with httpx.AsyncClient(timeout=10) as http:
        params = callback_params(await complete_login(http, url, username="zed"))
        token = await http.post(
            node_provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
    _header, claims = unverified(token.json()["id_token"])
    assert claims["sub"] == "zed"
    assert claims["email"] == "zed@example.test"
    assert claims["preferred_username"] == "zed"
    assert claims["groups"] == []


async def test_node_abort_at_consent_gives_access_denied(node_provider: OidcProvider) -> None:
    url, state, _nonce, _verifier = authorize_url(node_provider.authorization_endpoint, CLIENT_ID)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await complete_login(http, url, username="alice", consent=False)
    params = callback_params(response)
    assert params["error"] == "access_denied"
    assert params["state"] == state
    assert "code" not in params


async def test_node_clients_and_accounts_can_be_added_while_running(
    node_provider: OidcProvider,
) -> None:
    # A native client: its loopback redirect URI matches on any port (RFC 8252).
    node_provider.add_client(
        "late-client",
        "late-secret",
        ["http://127.0.0.1/oidc/callback"],
        application_type="native",
    )
    node_provider.set_account("bob", email="bob@corp.test", groups=["late"])
    url, _state, _nonce, verifier = authorize_url(
        node_provider.authorization_endpoint, "late-client"
    )
    async with httpx.AsyncClient(timeout=10) as http:
        params = callback_params(await complete_login(http, url, username="bob"))
        token = await http.post(
            node_provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            auth=("late-client", "late-secret"),
        )
    _header, claims = unverified(token.json()["id_token"])
    assert (claims["aud"], claims["email"], claims["groups"]) == (
        "late-client",
        "bob@corp.test",
        ["late"],
    )


def test_node_provider_restart_keeps_key_and_clients(tmp_path: Path) -> None:
    provider = OidcProvider(tmp_path, accounts=ACCOUNTS)
    provider.add_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    with provider:
        keys_before = httpx.get(provider.jwks_uri).json()
        pid = provider.process.pid if provider.process else None
        provider.add_client("added-later", "secret", [REDIRECT_URI])  # no restart
        assert provider.process is not None and provider.process.pid == pid
        provider.add_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI, "http://127.0.0.1:9/2"])
        assert provider.process is not None and provider.process.pid != pid  # restarted
        assert httpx.get(provider.jwks_uri).json() == keys_before
        assert provider.running
    assert not provider.running


def test_node_provider_reports_missing_node_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.harness.oidc as oidc

    monkeypatch.setattr(oidc, "PROVIDER_DIR", tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match=r"run scripts/install\.sh"):
        OidcProvider(tmp_path).start()


# -- hostile provider ------------------------------------------------------------------------------


@pytest.fixture
async def hostile() -> AsyncIterator[HostileOidcProvider]:
    async with HostileOidcProvider(groups=["staff"]) as provider:
        yield provider


async def hostile_tokens(
    provider: HostileOidcProvider, http: httpx.AsyncClient
) -> tuple[dict[str, Any], str]:
    """Run the code flow against the hostile provider: (token response, nonce)."""
    document = (await http.get(provider.discovery_url)).json()
    url, state, nonce, verifier = authorize_url(
        document["authorization_endpoint"], provider.client_id
    )
    response = await http.get(url)
    params = callback_params(response)
    assert params["state"] == state
    token = await http.post(
        document["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(provider.client_id, provider.client_secret),
    )
    assert token.status_code == 200, token.text
    return token.json(), nonce


async def test_hostile_discovery_and_ok_token(hostile: HostileOidcProvider) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        document = (await http.get(hostile.discovery_url)).json()
        assert document["issuer"] == hostile.issuer
        body, nonce = await hostile_tokens(hostile, http)
        assert body["token_type"] == "Bearer"
        keys = KeySet.import_key_set((await http.get(document["jwks_uri"])).json())
        token = jwt.decode(body["id_token"], keys, algorithms=["RS256"])
        claims = token.claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": hostile.issuer},
            aud={"essential": True, "value": hostile.client_id},
            nonce={"essential": True, "value": nonce},
        ).validate(claims)
        assert token.header["kid"] == hostile.key.kid
        assert claims["sub"] == "hostile-user"
        assert claims["groups"] == ["staff"]
        assert claims["email"] == hostile.email
        assert claims["exp"] - claims["iat"] == 300
        userinfo = await http.get(
            document["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert userinfo.json()["sub"] == "hostile-user"
        assert (await http.get(document["userinfo_endpoint"])).status_code == 401
    assert hostile.requests == {
        "discovery": 2,  # the test's and hostile_tokens'
        "authorize": 1,
        "token": 1,
        "jwks": 1,
        "userinfo": 2,
    }


async def test_hostile_token_endpoint_checks_client_and_pkce(hostile: HostileOidcProvider) -> None:
    async with httpx.AsyncClient(timeout=10) as http:

        async def exchange(verifier: str | None, auth: tuple[str, str]) -> httpx.Response:
            url, _state, _nonce, real_verifier = authorize_url(
                f"{hostile.issuer}/authorize", hostile.client_id
            )
            params = callback_params(await http.get(url))
            return await http.post(
                f"{hostile.issuer}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": params["code"],
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": real_verifier if verifier is None else verifier,
                },
                auth=auth,
            )

        good = (hostile.client_id, hostile.client_secret)
        assert (await exchange(None, good)).status_code == 200
        assert (await exchange(None, (hostile.client_id, "wrong"))).status_code == 401
        bad_pkce = await exchange("not-the-verifier", good)
        assert bad_pkce.status_code == 400
        assert bad_pkce.json()["error"] == "invalid_grant"


async def test_hostile_tamper_modes(hostile: HostileOidcProvider) -> None:
    published = KeySet.import_key_set(hostile.jwks())
    async with httpx.AsyncClient(timeout=10) as http:

        async def id_token(mode: str) -> tuple[str, dict[str, Any], dict[str, Any], str]:
            hostile.mode = mode
            body, nonce = await hostile_tokens(hostile, http)
            header, claims = unverified(body["id_token"])
            return body["id_token"], header, claims, nonce

        def verifies(token: str) -> bool:
            try:
                jwt.decode(token, published, algorithms=["RS256"])
            except (JoseError, ValueError):
                return False
            return True

        token, header, claims, nonce = await id_token("ok")
        assert verifies(token) and claims["nonce"] == nonce and header["alg"] == "RS256"

        token, _header, claims, _nonce = await id_token("wrong_aud")
        assert verifies(token) and claims["aud"] != hostile.client_id

        token, _header, claims, _nonce = await id_token("wrong_iss")
        assert verifies(token) and claims["iss"] != hostile.issuer

        token, header, claims, _nonce = await id_token("bad_signature")
        assert header["kid"] == hostile.key.kid and claims["aud"] == hostile.client_id
        assert not verifies(token)

        token, header, _claims, _nonce = await id_token("alg_none")
        assert header["alg"] == "none" and token.endswith(".")
        assert not verifies(token)

        token, header, _claims, _nonce = await id_token("hs256")
        assert header["alg"] == "HS256"
        assert not verifies(token)

        token, _header, claims, _nonce = await id_token("expired")
        assert verifies(token) and claims["iat"] < claims["exp"] < time.time()

        token, _header, claims, nonce = await id_token("wrong_nonce")
        assert verifies(token) and claims["nonce"] != nonce

        token, _header, claims, _nonce = await id_token("userinfo_sub_mismatch")
        assert verifies(token)
        hostile.mode = "userinfo_sub_mismatch"
        body, _nonce = await hostile_tokens(hostile, http)
        userinfo = await http.get(
            f"{hostile.issuer}/userinfo",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert userinfo.json()["sub"] != unverified(body["id_token"])[1]["sub"]

        token, header, _claims, _nonce = await id_token("unknown_kid")
        assert header["kid"] not in {
            key["kid"] for key in hostile.jwks(include_rotated=True)["keys"]
        }
    assert set(MODES) == {
        "ok",
        "wrong_aud",
        "wrong_iss",
        "bad_signature",
        "alg_none",
        "hs256",
        "expired",
        "wrong_nonce",
        "userinfo_sub_mismatch",
        "unknown_kid_rotated",
        "unknown_kid",
    }
    with pytest.raises(ValueError, match="unknown mode"):
        hostile.mode = "nonsense"


async def test_hostile_rotated_kid_is_published_from_the_second_jwks_request(
    hostile: HostileOidcProvider,
) -> None:
    hostile.mode = "unknown_kid_rotated"
    async with httpx.AsyncClient(timeout=10) as http:
        body, _nonce = await hostile_tokens(hostile, http)
        kid = unverified(body["id_token"])[0]["kid"]
        assert kid == hostile.rotated_key.kid

        first = (await http.get(f"{hostile.issuer}/jwks")).json()
        assert kid not in {key["kid"] for key in first["keys"]}
        second = (await http.get(f"{hostile.issuer}/jwks")).json()
        assert kid in {key["kid"] for key in second["keys"]}
        assert jwt.decode(body["id_token"], KeySet.import_key_set(second)).claims["sub"]
    assert hostile.requests["jwks"] == 2


async def test_hostile_unknown_kid_never_verifies(hostile: HostileOidcProvider) -> None:
    hostile.mode = "unknown_kid"
    async with httpx.AsyncClient(timeout=10) as http:
        body, _nonce = await hostile_tokens(hostile, http)
        kid = unverified(body["id_token"])[0]["kid"]
        for _ in range(3):
            keys = (await http.get(f"{hostile.issuer}/jwks")).json()["keys"]
            assert kid not in {key["kid"] for key in keys}
