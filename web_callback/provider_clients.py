"""Talking to identity providers: OpenID Connect (authlib for the code flow, joserfc for the ID
token) and GitHub (plain OAuth2). Each returns a VerifiedIdentity only after every check passed.
Loaded with its libraries when the first member signs in (see providers.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import structlog
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key, KeySet, OKPKey

from bot.community.identity import GroupRoles, VerifiedIdentity
from bot.community.identity_sync import FreshGroups, Revoked
from bot.config import ProviderSettings
from web_callback.providers import (
    LOGOUT_TOKEN_MAX_AGE,
    FlowSecrets,
    LogoutClaims,
    ProviderError,
)

log = structlog.get_logger(__name__)

# Only asymmetric signatures: a symmetric one could be forged with the client secret, and `none`
# is no signature at all.
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                       "ES512", "EdDSA"]  # fmt: skip
# EdDSA signs with these OKP curves only (X25519/X448 are for key agreement).
EDDSA_CURVES = ("Ed25519", "Ed448")
CLOCK_LEEWAY_S = 60
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token's `typ`, when it has one ("application/" may be left out, RFC 7515 4.1.9).
# Plain "JWT" too: Keycloak before 25 and some Authentik releases send it. What keeps an ID token
# (or anything else signed by the provider) from passing is the events claim and no nonce.
LOGOUT_TOKEN_TYPES = ("logout+jwt", "application/logout+jwt", "jwt")
DISCOVERY_TTL_S = 3600
JWKS_REFETCH_S = 30
HTTP_TIMEOUT_S = 15


def _oauth_client(
    settings: ProviderSettings, redirect_uri: str, scopes: tuple[str, ...] | None = None
) -> AsyncOAuth2Client:
    """One per flow step: authlib's client keeps token state, which must not be shared."""
    return AsyncOAuth2Client(
        client_id=settings.client_id,
        client_secret=settings.client_secret.get_secret_value(),
        scope=" ".join(scopes or settings.scope_list),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT_S,
    )


def _text_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value[:255] if isinstance(value, str) and value.strip() else None


def _identifier(value: object) -> bool:
    """A non-empty string that the store keeps as it is (its columns take 255 characters)."""
    return isinstance(value, str) and 0 < len(value) <= 255 and "\x00" not in value


def _keys_for(keys: KeySet, alg: JWSAlgModel) -> list[Key]:
    """The keys of `keys` that can verify an `alg` signature, in JWKS order: the right type (RSA
    for RS*/PS*, EC on the algorithm's curve for ES*, an Ed25519/Ed448 OKP key for EdDSA), not
    restricted to another use, algorithm or operation."""
    usable = []
    for key in keys:
        try:
            alg.check_key(key)  # type, "use": "sig", the key's own "alg", the EC curve
            key.check_key_op("verify")
        except JoseError:
            continue
        if isinstance(key, OKPKey) and key.curve_name not in EDDSA_CURVES:
            continue
        usable.append(key)
    return usable


class OidcProvider:
    def __init__(
        self, settings: ProviderSettings, redirect_uri: str, http: httpx.AsyncClient
    ) -> None:
        assert settings.issuer is not None
        self.id = settings.id
        self.name = settings.display_name
        self.group_roles = GroupRoles(settings.admin_groups, settings.moderator_groups)
        self._settings = settings
        self._issuer = settings.issuer
        self._redirect_uri = redirect_uri
        self._http = http
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._refetched_at = -JWKS_REFETCH_S  # the first refetch is never held back

    async def _get_json(self, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.get(url, timeout=HTTP_TIMEOUT_S, **kwargs)
        except httpx.HTTPError as problem:
            raise ProviderError(f"{url} unreachable: {problem!r}") from None
        if response.status_code != 200:
            raise ProviderError(f"{url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{url} did not answer JSON") from None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL_S:
            url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            metadata = await self._get_json(url)
            if metadata.get("issuer") != self._issuer:
                raise ProviderError(
                    f"discovery says issuer {metadata.get('issuer')!r}, configured {self._issuer!r}"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(metadata.get(key), str):
                    raise ProviderError(f"discovery document lacks {key}")
            self._metadata, self._metadata_at = metadata, time.monotonic()
        return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        """The provider's keys; `refresh` fetches them again (keys rotate), but not more than
        once per JWKS_REFETCH_S: tokens with made-up key ids must not make us hammer the
        provider."""
        refetch = refresh and time.monotonic() - self._refetched_at > JWKS_REFETCH_S
        if self._keys is None or refetch:
            if refetch:
                self._refetched_at = time.monotonic()
            jwks = await self._get_json((await self.metadata())["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(jwks)
            except (JoseError, ValueError, TypeError, KeyError) as problem:
                raise ProviderError(f"unusable JWKS: {problem}") from None
        return self._keys

    async def _offline(self) -> bool:
        """Whether to ask for a refresh token: configured so, and the provider offers it."""
        offered = (await self.metadata()).get("scopes_supported")
        return (
            self._settings.offline_access
            and isinstance(offered, list)
            and ("offline_access" in offered)
        )

    async def authorization_url(self, flow: FlowSecrets) -> str:
        endpoint = (await self.metadata())["authorization_endpoint"]
        offline = await self._offline()
        scopes = (*self._settings.scope_list, "offline_access") if offline else None
        # offline_access is granted only with the member's consent (OpenID Connect Core 11).
        extra = {"prompt": "consent"} if offline else {}
        async with _oauth_client(self._settings, self._redirect_uri, scopes) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=flow.state, nonce=flow.nonce, code_verifier=flow.verifier, **extra
            )
        return url

    async def fresh_groups(self, refresh_token: str) -> FreshGroups:
        """The member's groups as the provider sees them now, with the refresh token (rotated
        when the provider rotates it). Raises Revoked when the provider refuses the token
        (account disabled or deleted, consent withdrawn), ProviderError when it cannot answer."""
        metadata = await self.metadata()
        async with _oauth_client(self._settings, self._redirect_uri) as client:
            try:
                token = await client.refresh_token(
                    metadata["token_endpoint"], refresh_token=refresh_token
                )
            except OAuthError as problem:
                if problem.error in ("invalid_grant", "unauthorized_client", "invalid_client"):
                    raise Revoked(problem.error) from None
                raise ProviderError(f"refresh failed: {problem.error}") from None
            except Exception as problem:  # httpx errors, a malformed answer
                raise ProviderError(f"refresh failed: {problem!r}") from None
        access_token = token.get("access_token")
        if not isinstance(access_token, str):
            raise ProviderError("the refresh answer lacks an access token")
        claims: dict[str, Any] = {}
        id_token = token.get("id_token")
        if isinstance(id_token, str):  # checked like at login, but no nonce in a refresh
            claims = await self._verified_claims(id_token, None)
        if isinstance(metadata.get("userinfo_endpoint"), str):
            userinfo = await self._get_json(
                metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}
            )
            if not isinstance(userinfo, dict) or (claims and userinfo.get("sub") != claims["sub"]):
                raise ProviderError("userinfo is not an object naming the ID token's sub")
            claims = {**userinfo, **claims}
        if not claims:
            raise ProviderError("the refresh gave neither an ID token nor userinfo to read from")
        rotated = token.get("refresh_token")
        return FreshGroups(
            groups=self._groups(claims),
            refresh_token=rotated if isinstance(rotated, str) else None,
            subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
        )

    def _groups(self, claims: dict[str, Any]) -> tuple[str, ...]:
        groups = claims.get(self._settings.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise ProviderError(f"the {self._settings.groups_claim} claim is not a list")
        return tuple(str(g) for g in groups if isinstance(g, str | int))

    async def identity(self, code: str, flow: FlowSecrets) -> VerifiedIdentity:
        metadata = await self.metadata()
        async with _oauth_client(self._settings, self._redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=flow.verifier
                )
            except Exception as problem:  # authlib raises OAuthError, httpx errors, ValueError
                raise ProviderError(f"code exchange failed: {problem!r}") from None
        id_token, access_token = token.get("id_token"), token.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise ProviderError("the token response lacks id_token or access_token")
        claims = await self._verified_claims(id_token, flow.nonce)
        userinfo: dict[str, Any] = {}
        if isinstance(metadata.get("userinfo_endpoint"), str):
            userinfo = await self._get_json(
                metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}
            )
            if not isinstance(userinfo, dict) or userinfo.get("sub") != claims["sub"]:
                raise ProviderError("userinfo is not an object naming the ID token's sub")
        merged = {**userinfo, **claims}
        # An address the provider says it has not verified is not shown as the member's.
        email = _text_claim(merged, "email") if merged.get("email_verified") is not False else None
        return VerifiedIdentity(
            provider_id=self.id,
            provider_name=self.name,
            issuer=self._issuer,
            subject=claims["sub"],
            email=email,
            username=_text_claim(merged, "preferred_username") or _text_claim(merged, "nickname"),
            display_name=_text_claim(merged, "name"),
            groups=self._groups(merged),
            refresh_token=refresh
            if isinstance(refresh := token.get("refresh_token"), str)
            else None,
            session_id=sid if isinstance(sid := claims.get("sid"), str) else None,
        )

    async def _decoded(self, token: str) -> jwt.Token:
        """An ID token or a logout token with a verified signature (claims not checked yet):
        the same keys and algorithms sign both (Back-Channel Logout 1.0, 2.4 and 2.6)."""
        keys = await self._key_set()
        header = jws.extract_compact(token.encode()).headers()  # unverified: only picks keys
        if "kid" in header:
            try:
                return jwt.decode(token, keys, algorithms=ID_TOKEN_ALGORITHMS)
            except InvalidKeyIdError:
                # Keys rotate: fetch the JWKS once more, then give up.
                return jwt.decode(
                    token, await self._key_set(refresh=True), algorithms=ID_TOKEN_ALGORITHMS
                )
        # No kid: try each published key that fits the algorithm; the first that verifies wins.
        # get_alg refuses algorithms outside ID_TOKEN_ALGORITHMS (HS256, none) before any key is
        # tried or the JWKS refetched.
        registry = jws.JWSRegistry(algorithms=ID_TOKEN_ALGORITHMS)
        registry.check_header(header)
        alg = registry.get_alg(header["alg"])
        for refresh in (False, True):  # keys rotate here too: one refetch, then give up
            if refresh:
                keys = await self._key_set(refresh=True)
            for key in _keys_for(keys, alg):
                try:
                    return jwt.decode(token, key, algorithms=[alg.name])
                except BadSignatureError:
                    continue
        raise BadSignatureError("no published key verifies this token without kid")

    async def _verified_claims(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims after every check; `nonce` None for a token from a refresh
        (OpenID Connect Core 12.2: it carries no nonce, or the original one)."""
        try:
            decoded = await self._decoded(id_token)
            registry = jwt.JWTClaimsRegistry(
                leeway=CLOCK_LEEWAY_S,
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": self._settings.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                **({"nonce": {"essential": True, "value": nonce}} if nonce is not None else {}),
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as problem:  # TypeError: a hostile header
            raise ProviderError(f"ID token rejected: {problem}") from None
        claims = dict(decoded.claims)
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise ProviderError("ID token sub is not a non-empty string")
        self._check_audience(claims, "ID token")
        if claims["iat"] > time.time() + CLOCK_LEEWAY_S:
            raise ProviderError("ID token issued in the future")
        return claims

    def _check_audience(self, claims: dict[str, Any], what: str) -> None:
        """`aud` names us and otherwise only trusted audiences; with several, `azp` is us."""
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        trusted = (self._settings.client_id, *self._settings.trusted_audiences)
        if any(audience not in trusted for audience in audiences):
            raise ProviderError(f"{what} names an audience that is neither us nor trusted")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self._settings.client_id:
            raise ProviderError(f"{what} azp is not this client")

    async def logout_claims(self, token: str) -> LogoutClaims:
        """A back-channel logout token's claims after every check of OpenID Connect Back-Channel
        Logout 1.0, 2.6 but the replay check, which the caller makes with the logout itself."""
        try:
            decoded = await self._decoded(token)
            registry = jwt.JWTClaimsRegistry(
                leeway=CLOCK_LEEWAY_S,
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": self._settings.client_id},
                iat={"essential": True},  # not in the future (beyond the leeway)
                jti={"essential": True},
            )
            registry.validate(decoded.claims)  # exp and nbf too, when present
        except (JoseError, ValueError, TypeError) as problem:  # TypeError: a hostile header
            raise ProviderError(f"logout token rejected: {problem}") from None
        typ = decoded.header.get("typ")
        # Untyped tokens stay accepted: most providers sent them before the 2022 final spec.
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in LOGOUT_TOKEN_TYPES):
            raise ProviderError("logout token typ is not a logout token's")
        claims = dict(decoded.claims)
        if "nonce" in claims:  # an ID token, or a token meant to pass for one
            raise ProviderError("logout token carries a nonce")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise ProviderError("logout token lacks the back-channel logout event")
        subject, session_id = claims.get("sub"), claims.get("sid")
        if subject is None and session_id is None:
            raise ProviderError("logout token names neither sub nor sid")
        for name, value in (("jti", claims["jti"]), ("sub", subject), ("sid", session_id)):
            if value is not None and not _identifier(value):
                raise ProviderError(f"logout token {name} is not a usable identifier")
        self._check_audience(claims, "logout token")
        if claims["iat"] < time.time() - LOGOUT_TOKEN_MAX_AGE.total_seconds():
            raise ProviderError("logout token issued too long ago")
        return LogoutClaims(self._issuer, claims["jti"], subject, session_id)


class GitHubProvider:
    """GitHub speaks OAuth2 without ID tokens: the binding is on its numeric user id."""

    def __init__(
        self, settings: ProviderSettings, redirect_uri: str, http: httpx.AsyncClient
    ) -> None:
        self.id = settings.id
        self.name = settings.display_name
        self.group_roles = GroupRoles(settings.admin_groups, settings.moderator_groups)
        self._settings = settings
        self._redirect_uri = redirect_uri
        self._http = http
        self._web = settings.github_url.rstrip("/")
        self._api = settings.github_api_url.rstrip("/")

    async def authorization_url(self, flow: FlowSecrets) -> str:
        async with _oauth_client(self._settings, self._redirect_uri) as client:
            url, _ = client.create_authorization_url(
                f"{self._web}/login/oauth/authorize", state=flow.state, code_verifier=flow.verifier
            )
        return url

    async def _api_get(self, path: str, token: str) -> Any:
        try:
            response = await self._http.get(
                f"{self._api}{path}",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/vnd.github+json",
                },
                timeout=HTTP_TIMEOUT_S,
            )
        except httpx.HTTPError as problem:
            raise ProviderError(f"GitHub API unreachable: {problem!r}") from None
        if response.status_code == 401:  # the member revoked the app, or GitHub the token
            raise Revoked("GitHub refused the token")
        if response.status_code != 200:
            raise ProviderError(f"GitHub API {path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"GitHub API {path} did not answer JSON") from None

    async def identity(self, code: str, flow: FlowSecrets) -> VerifiedIdentity:
        async with _oauth_client(self._settings, self._redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    f"{self._web}/login/oauth/access_token",
                    code=code,
                    code_verifier=flow.verifier,
                    headers={"Accept": "application/json"},
                )
            except Exception as problem:
                raise ProviderError(f"code exchange failed: {problem!r}") from None
        access = token.get("access_token")
        if not isinstance(access, str):
            raise ProviderError("GitHub returned no access token")
        try:
            return await self._identity_of(access)
        except Revoked:
            raise ProviderError("GitHub refused the token it had just issued") from None

    async def _identity_of(self, access: str) -> VerifiedIdentity:
        user = await self._api_get("/user", access)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int):
            raise ProviderError("GitHub /user has no numeric id")
        email = user.get("email")
        if not email:
            emails = await self._api_get("/user/emails", access)
            email = next(
                (e["email"] for e in emails if e.get("primary") and e.get("verified")), None
            )
        return VerifiedIdentity(
            provider_id=self.id,
            provider_name=self.name,
            issuer=self._web,
            subject=str(user["id"]),
            email=email if isinstance(email, str) else None,
            username=_text_claim(user, "login"),
            display_name=_text_claim(user, "name"),
            groups=await self._groups(access),
            # GitHub's OAuth token does not expire: kept (sealed) to read org and teams again.
            refresh_token=access if self._settings.github_org else None,
        )

    async def _groups(self, access: str) -> tuple[str, ...]:
        """The org (when the member is in it) and its teams the member is on, as `org/team`."""
        org = self._settings.github_org
        if not org:
            return ()
        orgs = await self._api_get("/user/orgs?per_page=100", access)
        if not any(o.get("login", "").lower() == org.lower() for o in orgs):
            return ()
        teams = await self._api_get("/user/teams?per_page=100", access)
        return (org, *(
            f"{org}/{t['slug']}" for t in teams
            if t.get("organization", {}).get("login", "").lower() == org.lower()
        ))  # fmt: skip

    async def fresh_groups(self, refresh_token: str) -> FreshGroups:
        """The org and teams as GitHub sees them now, with the token kept at login. Raises
        Revoked when GitHub refuses the token (the member revoked the app)."""
        user = await self._api_get("/user", refresh_token)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int):
            raise ProviderError("GitHub /user has no numeric id")
        return FreshGroups(groups=await self._groups(refresh_token), subject=str(user["id"]))
