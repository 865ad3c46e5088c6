"""OpenID Connect Back-Channel Logout 1.0 at POST /backchannel-logout, against the real
node-oidc-provider, on SQLite and PostgreSQL.

A member logs in through the web app (a moderator through the provider's groups); ending their
session at the provider makes it POST a signed logout token to us, which does what the provider's
`backchannel_logout` setting says. Hostile variants are signed with the provider's own private
key (the harness generates it), so each one fails exactly the check it is about; none of them
changes a role, an account or the audit log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
import pytest_asyncio
import structlog
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import func, select, update

from bot.community.login_links import LoginLinks
from bot.config import load_config
from bot.store.database import Database
from bot.store.migrate import upgrade_to_head
from bot.store.models import AuditEntry, Identity, LogoutTokenSeen, User, utcnow
from tests.harness.bot import write_config
from tests.harness.hostile_oidc import HostileOidcProvider, s256
from tests.harness.oidc import OidcProvider, _FormParser, complete_login
from tests.harness.synapse import free_port
from web_callback.app import create_app, serve

ALICE = "@alice:example.org"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
WAIT_S = 5.0


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Member:
    """ALICE, signed in at the real provider through the web app, a moderator by her groups."""

    provider: OidcProvider
    base_url: str
    db: Database
    http: httpx.AsyncClient  # her browser: keeps the provider's session cookie
    client_id: str
    client_secret: str
    username: str
    session_id: str  # the `sid` of her ID token, kept with the binding
    key: RSAKey  # the provider's private signing key
    other: HostileOidcProvider  # a second configured provider (another issuer)
    stranger: HostileOidcProvider  # an issuer nobody configured

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/backchannel-logout"

    def claims(self, **changes: Any) -> dict[str, Any]:
        """A valid logout token's claims; a change to None drops the claim."""
        now = int(time.time())
        claims = {
            "iss": self.provider.issuer, "aud": self.client_id, "iat": now, "exp": now + 120,
            "jti": secrets.token_urlsafe(16), "sub": self.username, "sid": self.session_id,
            "events": {EVENT: {}},
        }  # fmt: skip
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: Any = None, header: dict[str, Any] | None = None, **changes: Any) -> str:
        """A logout token signed with the provider's key (or `key`)."""
        key = key or self.key
        head = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt", **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(head, self.claims(**changes), key, default_type=None)

    async def post(self, token: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(self.endpoint, data={"logout_token": token})

    async def state(self) -> tuple[str, bool]:
        async with self.db.transaction() as session:
            user = await session.get(User, ALICE)
            assert user is not None
            return user.role, user.active

    async def stale(self) -> bool:
        """Whether her binding waits for a new login (a resync gives it no role meanwhile)."""
        async with self.db.transaction() as session:
            binding = await session.scalar(select(Identity).where(Identity.mxid == ALICE))
            assert binding is not None
            return binding.stale_at is not None

    async def logouts_audited(self) -> int:
        async with self.db.transaction() as session:
            return await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "identity.logout")
            )

    async def make_moderator_again(self) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(User).where(User.mxid == ALICE).values(role="moderator", active=True)
            )


@contextlib.asynccontextmanager
async def web_app(
    tmp_path: Any, store_url: str, providers: list[dict[str, Any]]
) -> AsyncIterator[tuple[str, Database]]:
    """The web app on loopback with its database at `store_url` (SQLite or PostgreSQL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    path = write_config(tmp_path / "web.toml", {
        "matrix": {"homeserver": "http://127.0.0.1:9", "user_id": "@bot:test", "password": "x"},
        "data": {"dir": str(tmp_path / "data")},
        "database": {"url": store_url},
        "web": {"listen": f"127.0.0.1:{port}", "public_url": base},
        "sso": {"providers": providers},
    })  # fmt: skip
    config = load_config(path)
    db = Database(config.database.url)
    await upgrade_to_head(db)
    runner = await serve(create_app(config, db), "127.0.0.1", port)
    try:
        yield base, db
    finally:
        await runner.cleanup()
        await db.close()


async def sign_in(base: str, db: Database, http: httpx.AsyncClient, username: str) -> None:
    """The whole login of ALICE through the web app, driven like a browser."""
    link_token = await LoginLinks(db, timedelta(minutes=10)).issue(ALICE)
    page = await http.get(f"{base}/login/{link_token}")
    csrf = next(f for f in _forms(page.text) if "csrf" in f["inputs"])["inputs"]["csrf"]
    started = await http.post(
        f"{base}/login/{link_token}/start", data={"csrf": csrf, "provider": "community"}
    )
    assert started.status_code == 303, started.text
    leaving = await complete_login(http, started.headers["location"], username=username)
    done = await http.get(leaving.headers["location"])
    assert done.status_code == 200 and "role: <strong>moderator</strong>" in done.text, done.text


def _forms(html: str) -> list[dict[str, Any]]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


async def real_id_token(member: Member, redirect_uri: str) -> str:
    """An ID token of ALICE's provider session for our client, by a code flow of our own."""
    verifier = secrets.token_urlsafe(48)
    query = urlencode({
        "client_id": member.client_id, "response_type": "code", "scope": "openid",
        "redirect_uri": redirect_uri, "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16), "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    })  # fmt: skip
    leaving = await complete_login(
        member.http, f"{member.provider.authorization_endpoint}?{query}", username=member.username
    )
    code = parse_qs(urlsplit(leaving.headers["location"]).query)["code"][0]
    answer = await member.http.post(
        member.provider.token_endpoint,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
              "code_verifier": verifier},
        auth=(member.client_id, member.client_secret),
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()["id_token"]


async def end_session_at_provider(member: Member, id_token: str) -> None:
    """What the member does at the provider: sign out (RP-initiated logout page, confirmed)."""
    page = await member.http.get(
        f"{member.provider.issuer}/session/end", params={"id_token_hint": id_token}
    )
    assert page.status_code == 200, page.text
    form = next(f for f in _forms(page.text) if "xsrf" in f["inputs"])
    done = await member.http.post(
        urljoin(str(page.url), form["action"]), data={**form["inputs"], "logout": "yes"}
    )
    assert done.status_code in (302, 303), done.text


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def member_signed_in(
    provider: OidcProvider, store_url: str, tmp_path: Path, action: str
) -> AsyncIterator[Member]:
    """ALICE signed in through the web app, whose provider does `action` on back-channel logout;
    our client is registered at the provider with its back-channel logout URI, `sid` required."""
    async with contextlib.AsyncExitStack() as stack:
        other = await stack.enter_async_context(HostileOidcProvider())
        stranger = await stack.enter_async_context(HostileOidcProvider())
        suffix = secrets.token_hex(4)
        client_id, secret = f"bcl-{suffix}", f"bcl-secret-{suffix}-0123456789abcdef0123"
        username = f"alice-{suffix}"
        provider.set_account(username, email="alice@example.org", groups=["mods"])
        providers = [
            {"id": "community", "name": "Community SSO", "issuer": provider.issuer,
             "client_id": client_id, "client_secret": secret, "moderator_groups": ["mods"],
             "scopes": ["openid", "profile", "email", "groups"], "backchannel_logout": action},
            {"id": "other", "issuer": other.issuer, "client_id": other.client_id,
             "client_secret": other.client_secret},
        ]  # fmt: skip
        base, db = await stack.enter_async_context(web_app(tmp_path, store_url, providers))
        provider.add_client(
            client_id, secret, [f"{base}/callback"],
            backchannel_logout_uri=f"{base}/backchannel-logout",
            backchannel_logout_session_required=True,
        )  # fmt: skip
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=15))
        await sign_in(base, db, http, username)
        async with db.transaction() as session:
            binding = await session.scalar(select(Identity).where(Identity.mxid == ALICE))
        assert binding is not None and binding.session_id, "the ID token's sid is kept"
        jwks = json.loads(provider.jwks_path.read_text())
        member = Member(
            provider, base, db, http, client_id, secret, username, binding.session_id,
            RSAKey.import_key(jwks["keys"][0]), other, stranger,
        )  # fmt: skip
        assert await member.state() == ("moderator", True)
        yield member


@pytest.fixture
async def signed_in(oidc_provider, store_url, tmp_path):  # type: ignore[no-untyped-def]
    """A factory: ALICE signed in, the provider configured with the given logout action."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(action: str = "reset_role") -> Member:
            return await stack.enter_async_context(
                member_signed_in(oidc_provider, store_url, tmp_path, action)
            )

        yield make


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_store_url(request, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('bcl-store')}/bot.db"
    return request.getfixturevalue("postgres").fresh_database_url()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deactivating(oidc_provider, module_store_url, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One member for all the hostile tokens of a backend: none of them may change anything."""
    tmp_path = tmp_path_factory.mktemp("bcl-web")
    async with member_signed_in(oidc_provider, module_store_url, tmp_path, "deactivate") as member:
        yield member


# -- the real thing: the provider ends the session and tells us ---------------------------------


@pytest.mark.parametrize(
    ("action", "after", "audited"),
    [("reset_role", ("user", True), 1), ("deactivate", ("moderator", False), 1),
     ("ignore", ("moderator", True), 0)],
)  # fmt: skip
async def test_ending_the_session_at_the_provider_logs_the_member_out(
    action, after, audited, signed_in
):
    member = await signed_in(action)
    id_token = await real_id_token(member, f"{member.base_url}/callback")

    async def delivered() -> bool:
        async with member.db.transaction() as session:
            return bool(await session.scalar(select(func.count()).select_from(LogoutTokenSeen)))

    with structlog.testing.capture_logs() as logs:
        await end_session_at_provider(member, id_token)
        await until(delivered, "the provider's logout token is recorded")
    assert await member.state() == after
    assert await member.logouts_audited() == audited
    assert await member.stale() is (action != "ignore")
    [done] = [e for e in logs if e["event"] == "web.backchannel_logout"]
    assert done["provider"] == "community" and done["action"] == action
    assert done["mxids"] == [ALICE]
    # Nothing of a token in the log: only the provider, the action and who was concerned.
    assert not any("eyJ" in repr(entry) for entry in logs)


# -- tokens we sign ourselves with the provider's key --------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [{}, {"header": {"typ": None}}, {"header": {"typ": "application/logout+jwt"}},
     {"header": {"typ": "JWT"}}, {"sid": None}, {"sub": None}, {"exp": None}],
    ids=["typed", "untyped", "media-type", "jwt-typed", "sub-only", "sid-only", "no-exp"],
)  # fmt: skip
async def test_a_valid_logout_token_resets_the_role_once(variant, signed_in):
    member = await signed_in("reset_role")
    response = await member.post(member.token(**variant))
    assert response.status_code == 200, response.text
    assert response.content == b"" and "no-store" in response.headers["cache-control"]
    assert await member.state() == ("user", True)
    assert await member.logouts_audited() == 1


async def test_a_replayed_token_does_nothing_and_old_jtis_are_purged(signed_in):
    member = await signed_in("reset_role")
    async with member.db.transaction() as session:  # a jti seen long ago: purged by the next one
        session.add(LogoutTokenSeen(jti="ancient", issuer=member.provider.issuer,
                                    seen_at=utcnow() - timedelta(hours=1)))  # fmt: skip
    token = member.token()
    assert (await member.post(token)).status_code == 200
    assert await member.state() == ("user", True)
    await member.make_moderator_again()
    again = await member.post(token)
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_request",
        "error_description": "invalid logout request",
    }
    assert await member.state() == ("moderator", True)
    assert await member.logouts_audited() == 1
    async with member.db.transaction() as session:
        jtis = set(await session.scalars(select(LogoutTokenSeen.jti)))
    assert "ancient" not in jtis and len(jtis) == 1


async def test_ignore_records_the_token_but_changes_and_audits_nothing(signed_in):
    member = await signed_in("ignore")
    token = member.token()
    assert (await member.post(token)).status_code == 200
    assert (await member.post(token)).status_code == 400  # recorded: a replay is still refused
    assert await member.state() == ("moderator", True)
    assert await member.logouts_audited() == 0


async def test_the_same_token_delivered_five_times_at_once_acts_once(signed_in):
    member = await signed_in("deactivate")
    token = member.token()
    answers = await asyncio.gather(*(member.post(token) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400]
    assert await member.state() == ("moderator", False)
    assert await member.logouts_audited() == 1


def _alg_none(m: Member) -> str:
    return f"{b64({'alg': 'none', 'typ': 'logout+jwt'})}.{b64(m.claims())}."


def _hs256(m: Member) -> str:
    key = OctKey.import_key(m.client_secret.encode())
    return jwt.encode({"alg": "HS256", "kid": m.key.kid, "typ": "logout+jwt"}, m.claims(), key)


def _other_key(kid: str | None) -> Callable[[Member], str]:
    def make(m: Member) -> str:
        key = RSAKey.generate_key(2048, parameters={"kid": kid or m.key.kid, "use": "sig"})
        return m.token(key)

    return make


def _padded(size: int) -> Callable[[Member], str]:
    return lambda m: m.token(padding="x" * size)


HOSTILE: dict[str, Callable[[Member], Any]] = {
    "alg-none": _alg_none,
    "hs256-with-client-secret": _hs256,
    "another-key-same-kid": _other_key(None),
    "another-key-unknown-kid": _other_key("never-published"),
    "wrong-audience": lambda m: m.token(aud="someone-else"),
    "untrusted-extra-audience": lambda m: m.token(aud=[m.client_id, "other-api"], azp=m.client_id),
    "wrong-issuer": lambda m: m.token(iss=m.other.issuer),  # another provider's, our key
    "unknown-issuer": lambda m: m.token(iss=m.stranger.issuer),
    "issuer-with-slash": lambda m: m.token(iss=m.provider.issuer + "/"),
    "nonce": lambda m: m.token(nonce="n-0S6_WzA2Mj"),
    "no-events": lambda m: m.token(events=None),
    "other-event": lambda m: m.token(events={"http://schemas.openid.net/event/other": {}}),
    "event-not-an-object": lambda m: m.token(events={EVENT: "yes"}),
    "events-a-list": lambda m: m.token(events=[EVENT]),
    "neither-sub-nor-sid": lambda m: m.token(sub=None, sid=None),
    "no-jti": lambda m: m.token(jti=None),
    "empty-jti": lambda m: m.token(jti=""),
    "no-iat": lambda m: m.token(iat=None),
    "iat-too-old": lambda m: m.token(iat=int(time.time()) - 11 * 60, exp=int(time.time()) + 60),
    "iat-in-the-future": lambda m: m.token(
        iat=int(time.time()) + 5 * 60, exp=int(time.time()) + 7 * 60
    ),
    "expired": lambda m: m.token(iat=int(time.time()) - 200, exp=int(time.time()) - 80),
    "typ-access-token": lambda m: m.token(header={"typ": "at+jwt"}),
    "id-token": "id-token",  # the provider's own ID token for us, posted as a logout token
    "garbage": lambda m: "not a token at all",
    "three-dots": lambda m: "a.b.c",
    "token-too-long": _padded(9000),
    "body-too-large": lambda m: {"data": {"logout_token": m.token(), "pad": "x" * 20_000}},
    "missing-field": lambda m: {"data": {"token": m.token()}},
    "two-tokens": lambda m: {
        "content": urlencode([("logout_token", m.token()), ("logout_token", m.token())]),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "json-body": lambda m: {"json": {"logout_token": m.token()}},
    "wrong-content-type": lambda m: {
        "content": urlencode({"logout_token": m.token()}),
        "headers": {"content-type": "text/plain"},
    },
}

# What our log says about each (the answer is the same short text for all): every case fails the
# check it is about, not an earlier one by accident.
REASONS = {
    "alg-none": "'none' is not allowed", "hs256-with-client-secret": "'HS256' is not allowed",
    "another-key-same-kid": "bad_signature", "another-key-unknown-kid": "No key for kid",
    "wrong-audience": "Invalid claim: 'aud'", "untrusted-extra-audience": "neither us nor trusted",
    "wrong-issuer": "No key for kid", "unknown-issuer": "no configured provider",
    "issuer-with-slash": "no configured provider", "nonce": "carries a nonce",
    "no-events": "lacks the back-channel logout event",
    "other-event": "lacks the back-channel logout event",
    "event-not-an-object": "lacks the back-channel logout event",
    "events-a-list": "lacks the back-channel logout event",
    "neither-sub-nor-sid": "neither sub nor sid", "no-jti": "Missing claim: 'jti'",
    "empty-jti": "Invalid claim: 'jti'", "no-iat": "Missing claim: 'iat'",
    "iat-too-old": "issued too long ago", "iat-in-the-future": "issued in the future",
    "expired": "expired", "typ-access-token": "typ is not a logout token's",
    "id-token": "Missing claim: 'jti'",  # and it has a nonce, and no events
    "garbage": "not a JWT", "three-dots": "not a JWT", "token-too-long": "too long",
    "body-too-large": "body too large", "missing-field": "not exactly one logout_token",
    "two-tokens": "not exactly one logout_token", "json-body": "not a form",
    "wrong-content-type": "not a form",
}  # fmt: skip


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_logout_tokens_change_nothing(case, deactivating):
    member = deactivating
    made = HOSTILE[case]
    if made == "id-token":
        made = await real_id_token(member, f"{member.base_url}/callback")
    else:
        made = made(member)
    request = made if isinstance(made, dict) else {"data": {"logout_token": made}}
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(member.endpoint, **request)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_request"
    assert "no-store" in response.headers["cache-control"]
    assert await member.state() == ("moderator", True)
    assert await member.logouts_audited() == 0 and not await member.stale()
    if case == "unknown-issuer":
        assert sum(member.stranger.requests.values()) == 0  # nothing fetched from it
    [refused] = [e for e in logs if e["event"] == "web.backchannel_logout_refused"]
    assert refused["log_level"] == "warning" and REASONS[case] in refused["reason"]
    assert not any("eyJ" in repr(entry) for entry in logs)  # no token, whole or in part


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "variant", [{"sub": "somebody-else", "sid": None}, {"sid": "another-session"}],
    ids=["another-subject", "another-session-of-hers"],
)  # fmt: skip
async def test_a_valid_token_for_nobody_here_is_answered_200_and_changes_nothing(
    variant, deactivating
):
    member = deactivating
    response = await member.post(member.token(**variant))
    assert response.status_code == 200, response.text  # section 2.7: already logged out is success
    assert await member.state() == ("moderator", True)
    assert await member.logouts_audited() == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_other_methods_answer_json_too(deactivating):
    member = deactivating
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(member.endpoint)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"] == "invalid_request"
