"""A GitHub stand-in for tests (github.com cannot be reached from here): the OAuth2 authorize and
access-token endpoints, with PKCE, and the REST endpoints the bot reads (/user, /user/emails,
/user/orgs, /user/teams). Shapes follow GitHub's documented responses."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.harness.synapse import free_port


class GitHubStub:
    def __init__(
        self, *, client_id: str = "gh-client", client_secret: str = "gh-secret-0123456789"
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.user: dict[str, Any] = {
            "id": 583231,
            "login": "octocat",
            "name": "The Octocat",
            "email": None,
        }
        self.emails = [{"email": "octocat@github.example", "primary": True, "verified": True}]
        self.orgs = [{"login": "example-org"}]
        self.teams = [
            {"slug": "maintainers", "organization": {"login": "example-org"}},
            {"slug": "elsewhere", "organization": {"login": "other-org"}},
        ]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._codes: dict[str, str] = {}  # code -> code_challenge
        self._tokens: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> GitHubStub:
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", self._authorize)
        app.router.add_post("/login/oauth/access_token", self._token)
        for path in ("/api/user", "/api/user/emails", "/api/user/orgs", "/api/user/teams"):
            app.router.add_get(path, self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def revoke_tokens(self) -> None:
        """Every token given so far stops working (the member revoked the app)."""
        self._tokens.clear()

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["client_id"] == self.client_id and q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self._codes[code] = q["code_challenge"]
        location = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
        return web.Response(status=302, headers={"Location": location})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        basic = request.headers.get("Authorization", "")
        creds = base64.b64decode(basic.removeprefix("Basic ")).decode() if basic else ""
        client_ok = creds == f"{self.client_id}:{self.client_secret}" or (
            form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
        )
        challenge = self._codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        expected = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if not client_ok or challenge is None or challenge != expected:
            return web.json_response({"error": "bad_verification_code"})
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "scope": "read:user"}
        )

    async def _api(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self._tokens:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({
            "/api/user": self.user, "/api/user/emails": self.emails,
            "/api/user/orgs": self.orgs, "/api/user/teams": self.teams,
        }[request.path])  # fmt: skip
