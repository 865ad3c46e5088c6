"""A real OpenID Connect provider for tests: node-oidc-provider (npm ``oidc-provider`` 9), run with Node.

Synchronous on purpose, like :mod:`tests.harness.synapse`. The server is
``tests/harness/oidc_provider/provider.mjs``; its npm dependencies are installed by
``scripts/install.sh`` into ``tests/harness/oidc_provider/node_modules``.

The provider keeps node-oidc-provider's development interactions: a login page that takes any
username and password (the username becomes ``sub``), then a consent page. Both pages carry a
``[ Cancel ]`` link (``GET /interaction/<uid>/abort``) that ends the flow with
``error=access_denied`` at the client's redirect URI; :func:`complete_login` follows it when
``consent=False``. Claims come from ``accounts[username]``; unknown usernames get
``email=<username>@example.test``, ``name=preferred_username=<username>`` and no groups.

PKCE (S256) is required for every client; ``plain`` is refused. Redirects back to the client carry
``code``, ``state`` and ``iss`` (RFC 9207). State (sessions, grants, codes) lives in memory and is
lost on restart; the signing key and the clients are kept.

:func:`complete_login` drives a whole authorization-code flow over HTTP without a browser.
"""

from __future__ import annotations

import html.parser
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.harness.processes import spawn, tail, terminate, untrack
from tests.harness.synapse import REPO_ROOT, free_port

PROVIDER_DIR = REPO_ROOT / "tests/harness/oidc_provider"
PROVIDER_SCRIPT = PROVIDER_DIR / "provider.mjs"


def node_binary() -> str:
    """The ``node`` executable (env ``NODE`` overrides)."""
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("Node.js is not installed: run scripts/install.sh")
    return node


def _check_installed() -> None:
    if not (PROVIDER_DIR / "node_modules/oidc-provider/package.json").exists():
        raise RuntimeError(
            f"node-oidc-provider is not installed ({PROVIDER_DIR / 'node_modules'} is missing): "
            "run scripts/install.sh"
        )


def _generate_jwks() -> dict[str, Any]:
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(
        2048, parameters={"kid": f"test-{secrets.token_hex(4)}", "use": "sig", "alg": "RS256"}
    )
    return {"keys": [key.as_dict(private=True)]}


class OidcProvider:
    """One node-oidc-provider process on ``127.0.0.1``; its files live in ``workdir``.

    ``clients``: dicts with ``client_id``, ``client_secret``, ``redirect_uris`` and optionally any
    other client metadata (defaults: ``token_endpoint_auth_method=client_secret_basic``,
    ``grant_types=[authorization_code, refresh_token]``, ``response_types=[code]``). A client with
    ``application_type: "native"`` accepts its loopback redirect URIs on any port.
    ``accounts``: ``{username: {"email", "name", "groups", ...}}``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        clients: list[dict[str, Any]] | None = None,
        accounts: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients: list[dict[str, Any]] = [dict(c) for c in clients or []]
        self.accounts: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (accounts or {}).items()}
        self.config_path = self.workdir / "oidc-provider.json"
        self.jwks_path = self.workdir / "oidc-jwks.json"
        self.output_path = self.workdir / "oidc-provider.out"  # stdout/stderr of node
        self._admin_token = secrets.token_urlsafe(16)
        self._cookie_key = secrets.token_urlsafe(32)
        self.process: subprocess.Popen[bytes] | None = None
        self._static_client_ids: set[str] = set()

    # -- well-known URLs -----------------------------------------------------------------------

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/me"

    # -- clients and accounts ------------------------------------------------------------------

    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: list[str], **metadata: Any
    ) -> None:
        """Register a client (replacing one with the same id). Works before ``start()`` and while
        running (through a test-only admin endpoint: no restart, sessions are kept), except that
        replacing a client that was configured at start restarts the provider."""
        client = {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": list(redirect_uris),
            **metadata,
        }
        self.clients = [c for c in self.clients if c["client_id"] != client_id] + [client]
        if self.running:
            self._write_config()
            if client_id in self._static_client_ids:  # node-oidc-provider won't replace those
                self.restart()
            else:
                self._admin("clients", client)

    def set_account(self, username: str, **claims: Any) -> None:
        """Claims (``email``, ``name``, ``groups``, ...) for ``username``; effective at once."""
        self.accounts[username] = dict(claims)
        if self.running:
            self._write_config()
            self._admin("accounts", {username: self.accounts[username]})

    def _admin(self, what: str, body: dict[str, Any]) -> None:
        response = httpx.post(
            f"{self.issuer}/__harness/{what}",
            json=body,
            headers={"Authorization": f"Bearer {self._admin_token}"},
            timeout=10,
        )
        if response.status_code != 204:
            raise RuntimeError(
                f"oidc provider refused {what}: {response.status_code} {response.text}"
            )

    # -- configuration -------------------------------------------------------------------------

    def build_config(self) -> dict[str, Any]:
        if (
            not self.jwks_path.exists()
        ):  # one signing key for the provider's lifetime (restarts too)
            self.jwks_path.write_text(json.dumps(_generate_jwks()))
        return {
            "port": self.port,
            "issuer": self.issuer,
            "clients": self.clients,
            "accounts": self.accounts,
            "jwks": json.loads(self.jwks_path.read_text()),
            "cookie_keys": [self._cookie_key],
            "admin_token": self._admin_token,
        }

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.build_config(), indent=2))

    # -- process -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15) -> None:
        if self.running:
            return
        _check_installed()
        node = node_binary()
        self._write_config()
        self._static_client_ids = {c["client_id"] for c in self.clients}
        self.process = spawn(
            self, [node, str(PROVIDER_SCRIPT), str(self.config_path)],
            cwd=PROVIDER_DIR, output=self.output_path,
        )  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        ready = f"ready {self.issuer}".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"oidc provider exited with code {code} during startup.\n{self._diagnostics()}"
                )
            try:
                if ready in self.output_path.read_bytes():
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(
            f"oidc provider did not print {ready.decode()!r} within {timeout} s.\n"
            f"{self._diagnostics()}"
        )

    def _diagnostics(self) -> str:
        return f"--- tail of {self.output_path} ---\n{tail(self.output_path)}"

    def stop(self) -> None:
        process, self.process = self.process, None
        terminate(process, timeout=5)
        untrack(self)

    def restart(self, timeout: float = 15) -> None:
        """Stop and start again on the same port, with the same key and clients (sessions,
        grants and codes are lost)."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<OidcProvider {self.issuer} {state} workdir={self.workdir}>"


# -- driving the login pages without a browser ---------------------------------------------------


class _FormParser(html.parser.HTMLParser):
    """Forms (action, method, named inputs) and links of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._form: dict[str, Any] | None = None
        self._link: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            self._form["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and "href" in a:
            self._link = [a["href"], ""]
            self.links.append(("", ""))

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link is not None:
            self.links[-1] = (self._link[0], self._link[1].strip())
            self._link = None


class LoginFlowError(RuntimeError):
    """The provider's pages did not look as expected (the message carries the page)."""


def _origin(url: str | httpx.URL) -> tuple[str, str]:
    parts = urlsplit(str(url))
    return parts.scheme, parts.netloc


async def complete_login(
    http: httpx.AsyncClient,
    authorize_url: str,
    *,
    username: str,
    password: str = "pw",
    consent: bool = True,
    max_steps: int = 20,
) -> httpx.Response:
    """Drive node-oidc-provider's dev login and consent pages for ``authorize_url``.

    Redirects are followed here, inside the provider, whatever ``http.follow_redirects`` says.
    ``http`` should be fresh (or keep the provider's cookies on purpose: a signed-in session
    skips the login page, an earlier grant the consent page). With ``consent=False`` the user
    signs in, then follows the consent page's ``[ Cancel ]`` link (``GET /interaction/<uid>/abort``):
    the provider redirects with ``error=access_denied``. (An earlier grant skips the consent page,
    and then no ``access_denied`` comes: use a fresh client or ``prompt=consent``.)

    Returns the first redirect that leaves the provider's origin, unfollowed: its ``Location`` is
    the client's redirect URI with ``?code&state&iss`` (or ``?error=access_denied&...``). An error
    page of the provider raises :class:`LoginFlowError`.
    """
    provider_origin = _origin(authorize_url)
    response = await http.get(authorize_url, follow_redirects=False)
    for _ in range(max_steps):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if _origin(location) != provider_origin:
                return response
            response = await http.get(location, follow_redirects=False)
            continue
        if response.status_code != 200 or "html" not in response.headers.get("content-type", ""):
            raise LoginFlowError(
                f"unexpected {response.status_code} from {response.url}: {response.text[:2000]}"
            )
        page = _FormParser()
        page.feed(response.text)
        form = next(
            (f for f in page.forms if f["method"] == "post" and "prompt" in f["inputs"]), None
        )
        if form is None:
            raise LoginFlowError(f"no login/consent form at {response.url}: {response.text[:2000]}")
        if not consent and form["inputs"].get("prompt") == "consent":
            cancel = next((href for href, text in page.links if "cancel" in text.lower()), None)
            if cancel is None:
                raise LoginFlowError(f"no [ Cancel ] link at {response.url}")
            response = await http.get(urljoin(str(response.url), cancel), follow_redirects=False)
            continue
        data = dict(form["inputs"])
        if data.get("prompt") == "login":
            data["login"] = username
            data["password"] = password
        response = await http.post(
            urljoin(str(response.url), form["action"]), data=data, follow_redirects=False
        )
    raise LoginFlowError(f"no redirect back to the client after {max_steps} steps")


if __name__ == "__main__":  # manual check: python -m tests.harness.oidc
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, OidcProvider(Path(tmp)) as server:
        print(server, httpx.get(server.discovery_url).json()["issuer"], file=sys.stderr)
