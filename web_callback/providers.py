"""Identity providers as the login flow sees them. The clients that talk to them (authlib, joserfc,
httpx: a good part of a second to import) are loaded when a member first signs in, in a worker
thread, so neither the bot's start nor its event loop waits for them."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from bot.community.identity import GroupRoles, VerifiedIdentity
from bot.community.identity_sync import FreshGroups
from bot.config import Config, ProviderSettings

if TYPE_CHECKING:
    import httpx


class ProviderError(Exception):
    """The provider's answer failed a check. `str()` is for the log; pages say less."""


@dataclass(frozen=True)
class FlowSecrets:
    state: str
    nonce: str
    verifier: str


# A logout token is accepted until this long after its `iat` (node-oidc-provider's expire after
# 2 minutes, `exp` is optional; the margin is for clock skew and a provider's send queue).
LOGOUT_TOKEN_MAX_AGE = timedelta(minutes=10)
# Its jti is remembered for longer than it can be accepted (an `iat` may be up to the clock leeway,
# one minute, ahead): a replay is refused, and older rows are purged.
LOGOUT_JTI_KEPT = LOGOUT_TOKEN_MAX_AGE + timedelta(minutes=5)


@dataclass(frozen=True)
class LogoutClaims:
    """A back-channel logout token that passed every check: whom it logs out (`sub` and/or
    `sid`), and its `jti` (each token acts once)."""

    issuer: str
    jti: str
    subject: str | None
    session_id: str | None


class IdentityProvider(Protocol):
    id: str
    name: str
    group_roles: GroupRoles

    async def authorization_url(self, flow: FlowSecrets) -> str: ...

    async def identity(self, code: str, flow: FlowSecrets) -> VerifiedIdentity: ...

    async def fresh_groups(self, refresh_token: str) -> FreshGroups: ...


class HttpClient:
    """The web app's one HTTP client for talking to providers, made on first use."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _clients() -> Any:
    return await asyncio.to_thread(importlib.import_module, "web_callback.provider_clients")


class LazyProvider:
    """A configured provider; its client is built (and its libraries loaded) on first use."""

    def __init__(self, settings: ProviderSettings, redirect_uri: str, http: HttpClient) -> None:
        self.id = settings.id
        self.name = settings.display_name
        self.group_roles = GroupRoles(settings.admin_groups, settings.moderator_groups)
        self._settings, self._redirect_uri, self._http = settings, redirect_uri, http
        self._client: IdentityProvider | None = None

    async def _real(self) -> IdentityProvider:
        if self._client is None:
            clients = await _clients()
            kind = (
                clients.GitHubProvider if self._settings.kind == "github" else clients.OidcProvider
            )
            self._client = kind(self._settings, self._redirect_uri, self._http.get())
        return self._client

    async def authorization_url(self, flow: FlowSecrets) -> str:
        return await (await self._real()).authorization_url(flow)

    async def identity(self, code: str, flow: FlowSecrets) -> VerifiedIdentity:
        return await (await self._real()).identity(code, flow)

    async def fresh_groups(self, refresh_token: str) -> FreshGroups:
        return await (await self._real()).fresh_groups(refresh_token)

    @property
    def settings(self) -> ProviderSettings:
        return self._settings

    async def logout_claims(self, token: str) -> LogoutClaims:
        """The checked claims of a back-channel logout token (OIDC providers only)."""
        if self._settings.kind != "oidc":
            raise ProviderError(f"{self.id} has no back-channel logout")
        client: Any = await self._real()
        return await client.logout_claims(token)


def build_provider(settings: ProviderSettings, redirect_uri: str, http: HttpClient) -> LazyProvider:
    return LazyProvider(settings, redirect_uri, http)


def configured_providers(config: Config, http: HttpClient) -> dict[str, LazyProvider]:
    """Every `[[sso.providers]]`, by id, with the web app's callback as redirect URI."""
    redirect_uri = f"{config.web.public_url}/callback"
    return {p.id: build_provider(p, redirect_uri, http) for p in config.sso.providers}
