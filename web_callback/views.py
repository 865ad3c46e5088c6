"""The login flow's three steps: confirm (GET /login/<token>), start (POST), and the callback."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from bot.community.identity import AlreadyLinkedElsewhere, IdentityService
from bot.community.login_links import LinkError, LinkProblem, LoginLinks, hash_token
from web_callback.pages import Page, ProviderButton, confirm_page, problem_page, success_page
from web_callback.providers import FlowSecrets, IdentityProvider, ProviderError
from web_callback.signed_cookie import CookieSigner

log = structlog.get_logger(__name__)

BROWSER_COOKIE = "cb_browser"
FLOW_COOKIE = "cb_flow"
# Over https the cookies carry the __Host- prefix: the browser then refuses them from any other
# host (a sibling subdomain) and over plain http, so nobody can plant them in a victim's browser.
HOST_PREFIX = "__Host-"
FLOW_TTL_S = 600
BROWSER_TTL_S = 86400


@dataclass
class LoginFlow:
    links: LoginLinks
    identity: IdentityService
    providers: dict[str, IdentityProvider]
    flow_cookies: CookieSigner
    csrf: CookieSigner
    base_path: str  # the path part of [web] public_url, "" at the root
    secure_cookies: bool
    command_prefix: str
    link_ttl_text: str
    on_linked: Callable[[], None] | None = None

    # -- helpers ------------------------------------------------------------------------------

    @property
    def browser_cookie(self) -> str:
        return f"{HOST_PREFIX}{BROWSER_COOKIE}" if self.secure_cookies else BROWSER_COOKIE

    @property
    def flow_cookie(self) -> str:
        return f"{HOST_PREFIX}{FLOW_COOKIE}" if self.secure_cookies else FLOW_COOKIE

    def _respond(self, page: Page) -> web.Response:
        return web.Response(status=page.status, text=page.html, content_type="text/html")

    def _set_cookie(
        self, response: web.StreamResponse, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", httponly=True, samesite="Lax",
            secure=self.secure_cookies,
        )  # fmt: skip

    def _link_problem(self, problem: LinkProblem) -> Page:
        again = f"Send {self.command_prefix}login to the bot to get a new link."
        if problem is LinkProblem.EXPIRED:
            return problem_page(
                "This link has expired", f"Login links work for {self.link_ttl_text}.",
                status=410, hint=again,
            )  # fmt: skip
        if problem is LinkProblem.USED:
            return problem_page("This link was already used", "Each login link works once.",
                                status=410, hint=again)  # fmt: skip
        if problem is LinkProblem.OTHER_BROWSER:
            return problem_page(
                "This link is in use in another browser",
                "For your safety, a login link only works in the browser where it was first used.",
                status=403, hint=again,
            )  # fmt: skip
        return problem_page("This link is not valid", "It may be mistyped or cut off.",
                            status=404, hint=again)  # fmt: skip

    def _start_over(self, message: str, *, status: int = 400) -> Page:
        return problem_page(
            "This sign-in cannot be finished", message, status=status,
            hint=f"Nothing was linked. Send {self.command_prefix}login to the bot to start again.",
        )  # fmt: skip

    # -- GET /login/<token> -------------------------------------------------------------------

    async def confirm(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        browser = request.cookies.get(self.browser_cookie)
        new_browser = browser is None
        browser = browser or secrets.token_urlsafe(32)
        try:
            link = await self.links.inspect(token, browser)
        except LinkError as error:
            return self._respond(self._link_problem(error.problem))
        if not self.providers:
            return self._respond(problem_page(
                "Single sign-on is not set up", "This bot has no identity provider configured.",
                status=503, hint="Tell the community's operators.",
            ))  # fmt: skip
        buttons = [ProviderButton(p.id, p.name) for p in self.providers.values()]
        csrf = self.csrf.mac(browser, hash_token(token))
        action = f"{self.base_path}/login/{token}/start"
        response = self._respond(confirm_page(link.mxid, action, csrf, buttons))
        if new_browser:
            self._set_cookie(response, self.browser_cookie, browser, BROWSER_TTL_S)
        log.info("web.login_page", mxid=link.mxid)
        return response

    # -- POST /login/<token>/start ------------------------------------------------------------

    async def start(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        form = await request.post()
        browser = request.cookies.get(self.browser_cookie)
        if browser is None:
            return self._respond(self._start_over(
                "Your browser did not send back our cookie. Allow cookies for this site and open "
                "the link again.",
            ))  # fmt: skip
        csrf = form.get("csrf")
        if not isinstance(csrf, str) or not hmac.compare_digest(
            csrf, self.csrf.mac(browser, hash_token(token))
        ):
            return self._respond(
                self._start_over("The form was not sent from this page.", status=403)
            )
        provider = self.providers.get(str(form.get("provider", "")))
        if provider is None:
            return self._respond(self._start_over("Unknown sign-in provider."))
        try:
            link = await self.links.start(token, browser)
        except LinkError as error:
            return self._respond(self._link_problem(error.problem))
        flow = FlowSecrets(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),
        )
        try:
            url = await provider.authorization_url(flow)
        except ProviderError as problem:
            log.warning("web.provider_unavailable", provider=provider.id, reason=str(problem))
            return self._respond(problem_page(
                f"{provider.name} is not answering", "Please try again in a moment.", status=502,
            ))  # fmt: skip
        response = web.Response(status=303, headers={"Location": url})
        cookie = self.flow_cookies.dumps(
            {"state": flow.state, "nonce": flow.nonce, "verifier": flow.verifier,
             "provider": provider.id, "link": hash_token(token), "browser": hash_token(browser)},
            FLOW_TTL_S,
        )  # fmt: skip
        self._set_cookie(response, self.flow_cookie, cookie, FLOW_TTL_S)
        log.info("web.flow_started", mxid=link.mxid, provider=provider.id)
        return response

    # -- GET /callback ------------------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        page, ours = await self._finish(request)
        response = self._respond(page)
        if ours:  # this browser's flow is over, however it ended; a stranger's callback ends none
            response.del_cookie(self.flow_cookie, path="/", secure=self.secure_cookies)
        return response

    async def _finish(self, request: web.Request) -> tuple[Page, bool]:
        """The page, and whether the callback belonged to this browser's flow."""
        flow = self.flow_cookies.loads(request.cookies.get(self.flow_cookie))
        browser = request.cookies.get(self.browser_cookie)
        if flow is None or browser is None:
            log.warning("web.callback_refused", reason="no valid flow cookie")
            return self._start_over(
                "It was started in another browser, or it took too long."
            ), False
        state = request.query.get("state", "")
        if not hmac.compare_digest(state.encode(), str(flow["state"]).encode()):
            log.warning("web.callback_refused", reason="state mismatch")
            page = self._start_over(
                "The answer from the sign-in provider does not match this browser."
            )
            return page, False
        if not hmac.compare_digest(str(flow.get("browser", "")), hash_token(browser)):
            log.warning("web.callback_refused", reason="flow cookie of another browser")
            return self._start_over(
                "It was started in another browser, or it took too long."
            ), False
        return await self._complete(request, flow, browser), True

    async def _complete(self, request: web.Request, flow: dict[str, str], browser: str) -> Page:
        provider = self.providers.get(flow["provider"])
        if provider is None:
            return self._start_over("That sign-in provider is no longer configured.")
        if "error" in request.query:
            error = request.query.get("error", "")
            description = request.query.get("error_description", "")
            log.info("web.provider_error", provider=provider.id, error=error[:100])
            return problem_page(
                f"{provider.name} did not sign you in",
                f"{provider.name} said: {error}" + (f" — {description}" if description else ""),
                status=400,
                hint=f"Nothing was linked. Send {self.command_prefix}login to the bot to try again.",
            )
        code = request.query.get("code")
        if not code:
            return self._start_over("The sign-in provider sent no authorization code.")
        secrets_ = FlowSecrets(flow["state"], flow["nonce"], flow["verifier"])
        try:
            identity = await provider.identity(code, secrets_)
        except ProviderError as problem:
            log.warning("web.identity_rejected", provider=provider.id, reason=str(problem))
            return problem_page(
                "We could not verify your sign-in",
                f"{provider.name}'s answer did not pass our security checks.",
                status=400,
                hint=f"Nothing was linked. Send {self.command_prefix}login to the bot to try again.",
            )
        try:
            result = await self.identity.bind(flow["link"], browser, identity, provider.group_roles)
        except LinkError as error:
            return self._link_problem(error.problem)
        except AlreadyLinkedElsewhere as taken:
            log.info("web.identity_taken", provider=provider.id, other_mxid=taken.other_mxid)
            return problem_page(
                "This account is already linked",
                f"Your {provider.name} account {identity.label} is linked to {taken.other_mxid}.",
                status=409,
                hint=f"To move it, send {self.command_prefix}unlink to the bot from "
                f"{taken.other_mxid} first. Nothing was changed.",
            )
        log.info("web.linked", mxid=result.mxid, provider=provider.id, role=result.role.label)
        if self.on_linked is not None:
            self.on_linked()
        return success_page(result.mxid, identity.label, provider.name, result.role.label)
