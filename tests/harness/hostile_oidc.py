"""A small, deliberately misbehaving OpenID provider for token-tampering tests (aiohttp).

It runs in the test's event loop on 127.0.0.1 (``await start()`` / ``await stop()``, or
``async with``). There is no login page: ``/authorize`` redirects straight back to the client's
``redirect_uri`` with ``code`` and ``state``. ``/token`` checks the client credentials
(``client_secret_basic`` or ``client_secret_post``), the ``redirect_uri`` and the PKCE verifier (S256)
and returns an ID token tampered with according to :attr:`HostileOidcProvider.mode`:

==========================  ====================================================================
``ok``                      correct token: RS256, published ``kid``, right iss/aud/nonce/exp
``wrong_aud``               ``aud`` is another client
``wrong_iss``               ``iss`` is another issuer
``bad_signature``           signature bytes altered
``alg_none``                unsigned, header ``alg: none``
``hs256``                   HMAC-SHA256 with the client secret as key (symmetric: must be refused)
``expired``                 ``exp`` in the past (``iat`` earlier still)
``wrong_nonce``             ``nonce`` differs from the one sent to ``/authorize``
``userinfo_sub_mismatch``   ID token fine; ``/userinfo`` answers another ``sub``
``unknown_kid_rotated``     signed with the *rotated* key: absent from the first ``/jwks`` response,
                            present from the second on (a client that refetches once succeeds)
``unknown_kid``             signed with a key never published (fails even after refetching)
==========================  ====================================================================

``mode`` may be changed between requests. ``requests`` counts requests per endpoint
(``discovery``, ``authorize``, ``token``, ``jwks``, ``userinfo``).

Signed tokens carry the signing key's ``kid`` unless ``kid_in_header`` is false. In the modes that
sign with the primary key, ``signing_key`` (any RSA, EC or OKP key) replaces it; the algorithm
follows the key (RS256, ES256/ES384/ES512 by curve, EdDSA). ``published_keys`` replaces the
primary key in ``/jwks`` (the rotated key is still appended from the second response on).
"""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

MODES = (
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
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``."""
    return _b64url(hashlib.sha256(verifier.encode()).digest())


@functools.cache
def _rsa_key(kid: str) -> RSAKey:
    """Generated once per test process (≈ 0.1 s each): the providers' ports, hence their
    ``jwks_uri``, differ anyway."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def signing_alg(key: Key) -> str:
    """The JWS algorithm the harness signs with for ``key``."""
    if isinstance(key, ECKey):
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[key.curve_name]
    if isinstance(key, OKPKey):
        return "EdDSA"
    return "RS256"


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


class HostileOidcProvider:
    """See the module docstring. Attributes may be changed at any time:

    ``mode``, ``subject``, ``email``, ``preferred_username``, ``groups``, ``extra_claims`` (merged
    into every ID token, after tampering), ``rotated_published_after`` (how many ``/jwks``
    responses omit the rotated key; default 1), ``kid_in_header`` (default true),
    ``signing_key`` and ``published_keys`` (default None: the primary key).
    """

    def __init__(
        self,
        *,
        client_id: str = "hostile-client",
        client_secret: str = "hostile-secret-0123456789abcdef0123456789",
        mode: str = "ok",
        subject: str = "hostile-user",
        email: str = "hostile-user@hostile.test",
        preferred_username: str = "hostile-user",
        groups: list[str] | None = None,
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.mode = mode
        self.subject = subject
        self.email = email
        self.preferred_username = preferred_username
        self.groups = list(groups) if groups is not None else ["members"]
        self.extra_claims: dict[str, Any] = {}
        self.rotated_published_after = 1
        self.kid_in_header = True
        self.signing_key: Key | None = None
        self.published_keys: list[Key] | None = None
        self.port = port
        self.issuer = ""  # set by start()
        self.requests: collections.Counter[str] = collections.Counter()
        self.key = _rsa_key("hostile-primary")
        self.rotated_key = _rsa_key("hostile-rotated")
        self.unpublished_key = _rsa_key("hostile-never-published")
        self.authorize_requests: list[dict[str, str]] = []  # query of every /authorize request
        self.issued_id_tokens: list[str] = []
        self._codes: dict[str, dict[str, str]] = {}
        self._access_tokens: dict[str, str] = {}  # token -> sub
        self._runner: web.AppRunner | None = None

    # -- attributes ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; one of {', '.join(MODES)}")
        self._mode = value

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nonce",
                "email",
                "preferred_username",
                "groups",
            ],
        }

    def jwks(self, *, include_rotated: bool = False) -> dict[str, Any]:
        published = self.published_keys if self.published_keys is not None else [self.key]
        keys = [key.as_dict(private=False) for key in published]
        if include_rotated:
            keys.append(self.rotated_key.as_dict(private=False))
        return {"keys": keys}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_route("*", "/userinfo", self._userinfo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.issuer = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HostileOidcProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- endpoints -------------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests["discovery"] += 1
        return web.json_response(self.discovery_document())

    async def _authorize(self, request: web.Request) -> web.Response:
        self.requests["authorize"] += 1
        query = dict(request.query)
        self.authorize_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri:
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(24)
        self._codes[code] = {
            "redirect_uri": redirect_uri,
            "nonce": query.get("nonce", ""),
            "code_challenge": query.get("code_challenge", ""),
            "code_challenge_method": query.get("code_challenge_method", ""),
        }
        params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        raise web.HTTPFound(_with_query(redirect_uri, params))

    def _client_authenticated(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return False
            client_id, _, secret = decoded.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(
            secret, self.client_secret
        )

    async def _token(self, request: web.Request) -> web.Response:
        self.requests["token"] += 1
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._client_authenticated(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = form.get("code_verifier", "")
        if (
            grant["code_challenge_method"] != "S256"
            or not verifier
            or not hmac.compare_digest(s256(verifier), grant["code_challenge"])
        ):
            return web.json_response(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"},
                status=400,
            )
        access_token = secrets.token_urlsafe(32)
        self._access_tokens[access_token] = self.subject
        id_token = self.make_id_token(grant["nonce"])
        self.issued_id_tokens.append(id_token)
        return web.json_response(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
                "scope": "openid email profile groups",
            },
            headers={"Cache-Control": "no-store"},
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests["jwks"] += 1
        include_rotated = self.requests["jwks"] > self.rotated_published_after
        return web.json_response(self.jwks(include_rotated=include_rotated))

    async def _userinfo(self, request: web.Request) -> web.Response:
        self.requests["userinfo"] += 1
        header = request.headers.get("Authorization", "")
        sub = self._access_tokens.get(header[7:]) if header.startswith("Bearer ") else None
        if sub is None:
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if self.mode == "userinfo_sub_mismatch":
            sub = f"not-{sub}"
        return web.json_response(
            {
                "sub": sub,
                "email": self.email,
                "preferred_username": self.preferred_username,
                "groups": self.groups,
            }
        )

    # -- tokens ----------------------------------------------------------------------------------

    def make_id_token(self, nonce: str) -> str:
        """An ID token for the current ``mode`` (also usable without the HTTP flow)."""
        mode = self.mode
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "email": self.email,
            "preferred_username": self.preferred_username,
            "groups": self.groups,
        }
        if nonce:
            claims["nonce"] = nonce
        if mode == "wrong_aud":
            claims["aud"] = f"{self.client_id}-other"
        elif mode == "wrong_iss":
            claims["iss"] = "http://127.0.0.1:9/not-the-issuer"
        elif mode == "expired":
            claims["iat"] = now - 900
            claims["exp"] = now - 600
        elif mode == "wrong_nonce":
            claims["nonce"] = f"not-{nonce or 'a-nonce'}-{secrets.token_hex(4)}"
        claims.update(self.extra_claims)

        if mode == "alg_none":
            header = {"alg": "none", "typ": "JWT"}
            return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}."
        if mode == "hs256":
            key = OctKey.import_key(self.client_secret)
            return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, key, algorithms=["HS256"])
        signing_key = {
            "unknown_kid_rotated": self.rotated_key,
            "unknown_kid": self.unpublished_key,
        }.get(mode, self.signing_key or self.key)
        alg = signing_alg(signing_key)
        header = {"alg": alg, "typ": "JWT"}
        if self.kid_in_header:
            signing_key.ensure_kid()  # the RFC 7638 thumbprint, as a client's KeySet would name it
            header["kid"] = signing_key.kid
        token = jwt.encode(header, claims, signing_key, algorithms=[alg])
        if mode == "bad_signature":
            header_b64, payload_b64, signature_b64 = token.split(".")
            signature = bytearray(_b64url_decode(signature_b64))
            signature[len(signature) // 2] ^= 0x01
            token = f"{header_b64}.{payload_b64}.{_b64url(bytes(signature))}"
        return token

    def __repr__(self) -> str:
        state = "running" if self._runner is not None else "stopped"
        return f"<HostileOidcProvider {self.issuer or '-'} mode={self.mode} {state}>"
