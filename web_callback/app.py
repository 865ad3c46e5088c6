"""The aiohttp application: routes, security headers on every answer, friendly error pages and
never a stack trace. It uses the domain and the store, never the Matrix client."""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from bot.community.identity import IdentityService
from bot.community.login_links import LoginLinks
from bot.config import Config
from bot.listener import listen
from bot.store.database import Database
from web_callback.backchannel_logout import BackchannelLogout
from web_callback.health import ReadinessProbe, add_health_routes
from web_callback.pages import CSS_HASH, problem_page
from web_callback.providers import HttpClient, configured_providers
from web_callback.signed_cookie import CookieSigner
from web_callback.views import LoginFlow

log = structlog.get_logger(__name__)

DB_KEY = web.AppKey("db", Database)
HTTP_KEY = web.AppKey("http", HttpClient)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_secret(config: Config) -> bytes:
    """`[web] session_secret`, or one generated once and kept in the data dir (a single web
    process is fine with that; several behind a load balancer need the configured one)."""
    if config.web.session_secret is not None:
        return config.web.session_secret.get_secret_value().encode()
    path: Path = config.data.dir / "web-session-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        log.info("web.session_secret_generated", path=str(path))
    return path.read_text().strip().encode()


def _security_headers() -> dict[str, str]:
    # No form-action: Chromium applies it to every redirect after a form POST, and the sign-in
    # redirect may pass through origins we cannot know (Cognito's hosted UI, Keycloak brokering).
    csp = (
        f"default-src 'none'; style-src '{CSS_HASH}'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",  # the login token is in the path
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def _middleware(
    headers: dict[str, str],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            page = problem_page(
                exc.reason or "Not found", "There is nothing here.", status=exc.status
            )
            response = web.Response(status=page.status, text=page.html, content_type="text/html")
        except Exception:
            log.exception("web.error", path=request.rel_url.path.split("/login/")[0])
            page = problem_page(
                "Something went wrong", "The error has been logged. Please try again later.",
                status=500,
            )  # fmt: skip
            response = web.Response(status=500, text=page.html, content_type="text/html")
        response.headers.update(headers)
        return response

    return guard


def create_app(
    config: Config,
    db: Database,
    *,
    on_linked: Callable[[], None] | None = None,
    readiness: ReadinessProbe | None = None,
) -> web.Application:
    """`readiness`: the bot's own checks for /readyz (logged in, synced); the database is
    always checked."""
    public = urlsplit(config.web.public_url)
    http = HttpClient()
    providers = configured_providers(config, http)
    secret = session_secret(config)
    ttl = config.sso.link_ttl
    flow = LoginFlow(
        links=LoginLinks(db, ttl),
        identity=IdentityService.from_config(config, db),
        providers=providers,
        flow_cookies=CookieSigner(secret, "flow"),
        csrf=CookieSigner(secret, "csrf"),
        base_path=public.path.rstrip("/"),
        secure_cookies=public.scheme == "https",
        command_prefix=config.matrix.command_prefix,
        link_ttl_text=f"{ttl // timedelta(minutes=1)} minutes",
        on_linked=on_linked,
    )
    app = web.Application(middlewares=[_middleware(_security_headers())])
    app[DB_KEY] = db
    app[HTTP_KEY] = http
    add_health_routes(app, db, readiness)
    app.router.add_get("/login/{token}", flow.confirm)
    app.router.add_post("/login/{token}/start", flow.start)
    app.router.add_get("/callback", flow.callback)
    logout = BackchannelLogout(flow.identity, providers)
    app.router.add_post("/backchannel-logout", logout.handle)
    app.router.add_route("*", "/backchannel-logout", logout.not_allowed)

    async def close_http(app: web.Application) -> None:
        await app[HTTP_KEY].aclose()

    app.on_cleanup.append(close_http)
    return app


async def serve(app: web.Application, listen_host: str, listen_port: int) -> web.AppRunner:
    """Start serving; a clear error when the address cannot be used."""
    return await listen(app, listen_host, listen_port, setting="web.listen")
