"""POST /backchannel-logout: OpenID Connect Back-Channel Logout 1.0. A provider tells us that a
member's session ended there; what that does is the provider's `backchannel_logout` setting.

The request carries one signed `logout_token`. The provider is picked by the token's (not yet
verified) `iss` among the configured OpenID Connect providers, so an unknown issuer makes us fetch
nothing; then every check of section 2.6 is made (provider_clients.OidcProvider.logout_claims),
and the token's `jti` is recorded in the same transaction as the action, so a token acts once.

Answers (section 2.8): 200 with an empty body when the logout was done (or concerned nobody), 400
with a short JSON error for any invalid request, 501 when the store failed; never an HTML page.
The token itself is never logged."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web

from bot.community.identity import IdentityService, LogoutReplayed
from web_callback.providers import LOGOUT_JTI_KEPT, LazyProvider, ProviderError

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 8 * 1024  # a signed token is a few hundred bytes to 2 KB (RSA-4096 signature)
FORM = "application/x-www-form-urlencoded"
NO_CACHE = {"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"}  # section 2.8


class Refused(Exception):
    """The request is refused with 400; the message is for our log, the answer says less."""

    def __init__(self, reason: str, answer: str = "invalid logout request") -> None:
        super().__init__(reason)
        self.answer = answer


def _refusal(answer: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": answer}, status=400, headers=NO_CACHE
    )


async def _body(request: web.Request) -> bytes:
    """The whole body, refused past MAX_BODY_BYTES whatever Content-Length says (or not)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refused("body too large", "request too large")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refused("body too large", "request too large")
    return bytes(body)


def _logout_token(content_type: str, body: bytes) -> str:
    if content_type != FORM:
        raise Refused("not a form", f"expected {FORM}")
    try:
        form = parse_qs(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=False, max_num_fields=20
        )
    except (UnicodeDecodeError, ValueError):
        raise Refused("unparsable form") from None
    tokens = form.get("logout_token", [])
    if len(tokens) != 1 or not tokens[0]:
        raise Refused("not exactly one logout_token", "expected one logout_token")
    if len(tokens[0]) > MAX_TOKEN_CHARS:
        raise Refused("logout_token too long")
    return tokens[0]


def _unverified_claim(token: str, name: str) -> Any:
    """A claim read without checking anything: only to pick whose keys verify the token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, RecursionError):
        raise Refused("not a JWT") from None
    return claims.get(name) if isinstance(claims, dict) else None


@dataclass
class BackchannelLogout:
    identity: IdentityService
    providers: Mapping[str, LazyProvider]

    def _provider_for(self, token: str) -> LazyProvider:
        """The configured OpenID Connect provider whose issuer the token names (exactly); when
        several clients of one issuer are configured, the one the token's audience names."""
        issuer = _unverified_claim(token, "iss")
        candidates = [
            p for p in self.providers.values()
            if p.settings.kind == "oidc" and isinstance(issuer, str) and p.settings.issuer == issuer
        ]  # fmt: skip
        if len(candidates) > 1:
            audience = _unverified_claim(token, "aud")
            audiences = audience if isinstance(audience, list) else [audience]
            candidates = [p for p in candidates if p.settings.client_id in audiences]
        if len(candidates) != 1:
            raise Refused("no configured provider has this issuer")
        return candidates[0]

    async def handle(self, request: web.Request) -> web.Response:
        provider_id = None
        try:
            token = _logout_token(request.content_type, await _body(request))
            provider = self._provider_for(token)
            provider_id = provider.id
            try:
                claims = await provider.logout_claims(token)
            except ProviderError as problem:
                raise Refused(str(problem)) from None
            except Exception as problem:  # whatever a hostile token trips: a refusal, no trace
                raise Refused(f"logout token unusable: {type(problem).__name__}") from None
            action = provider.settings.backchannel_logout
            try:
                mxids = await self.identity.logged_out(
                    claims.issuer, claims.subject, claims.session_id, action,
                    jti=claims.jti, jti_kept=LOGOUT_JTI_KEPT,
                )  # fmt: skip
            except LogoutReplayed:
                raise Refused("logout token replayed") from None
        except Refused as refused:
            log.warning("web.backchannel_logout_refused", provider=provider_id, reason=str(refused))
            return _refusal(refused.answer)
        except Exception:  # the store failed: "the logout failed" is 501 (section 2.8)
            log.exception("web.backchannel_logout_failed", provider=provider_id)
            return web.json_response(
                {"error": "server_error", "error_description": "logout failed"},
                status=501, headers=NO_CACHE,
            )  # fmt: skip
        log.info("web.backchannel_logout", provider=provider.id, action=action, mxids=mxids)
        return web.Response(status=200, headers=NO_CACHE)

    async def not_allowed(self, request: web.Request) -> web.Response:
        """Any other method: JSON too, not the app's HTML error page."""
        return web.json_response(
            {"error": "invalid_request", "error_description": "use POST"},
            status=405, headers={**NO_CACHE, "Allow": "POST"},
        )  # fmt: skip
