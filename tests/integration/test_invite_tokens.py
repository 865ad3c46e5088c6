"""Invite tokens against a real Synapse that asks for a registration token at sign-up: a token made
in chat registers a real account through the client-server API (user-interactive auth with the
`m.login.registration_token` stage) and is then used up; the list, revoking, the refusals (plain
members, group rooms, an admin token without admin rights, a homeserver without token
registration, no admin token at all) and the audit trail."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from bot.commands.onboarding import NOT_CONFIGURED, PRIVATE_ONLY
from bot.community.invite_tokens import REGISTRATION_CLOSED
from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import SynapseServer
from tests.integration.test_bot_core import dm_with
from tests.integration.test_community_ops import body, group_room

pytestmark = pytest.mark.synapse

_RELAXED = {"per_second": 1000, "burst_count": 10000}
TOKEN_REGISTRATION = {
    "enable_registration": True,
    "registration_requires_token": True,
    "rc_registration_token_validity": _RELAXED,
}
TOKEN_IN_REPLY = re.compile(r"^Invite token: `([A-Za-z0-9._~-]+)`")


@pytest.fixture(scope="module")
def token_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A Synapse where only people with a registration token may sign up."""
    server = SynapseServer(
        tmp_path_factory.mktemp("synapse-tokens"), extra_config=TOKEN_REGISTRATION
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def admin_api(server: SynapseServer, admin_token: str, token: str = "") -> tuple[str, dict]:
    path = "/_synapse/admin/v1/registration_tokens" + (f"/{token}" if token else "")
    return server.base_url + path, {"Authorization": f"Bearer {admin_token}"}


async def register_with_token(server: SynapseServer, username: str, token: str) -> httpx.Response:
    """Sign up as a newcomer's client does: ask for the flows, then answer the token stage and
    the dummy stage of the same user-interactive auth session."""
    url = f"{server.base_url}/_matrix/client/v3/register"
    account = {"username": username, "password": secrets.token_urlsafe(16)}
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(url, json=account)
        assert first.status_code == 401, first.text
        flows = [flow["stages"] for flow in first.json()["flows"]]
        assert flows == [["m.login.registration_token", "m.login.dummy"]]
        session = first.json()["session"]
        answer = await http.post(
            url,
            json={
                **account,
                "auth": {"type": "m.login.registration_token", "token": token, "session": session},
            },
        )
        if answer.status_code == 401 and answer.json().get("completed") == [
            "m.login.registration_token"
        ]:
            answer = await http.post(
                url, json={**account, "auth": {"type": "m.login.dummy", "session": session}}
            )
        return answer


async def test_a_token_made_in_chat_registers_one_real_account(token_synapse, tmp_path):
    server = token_synapse
    hs_admin = server.fresh_account("hsadmin", admin=True)
    owner, mod, member = (server.fresh_account(n) for n in ("owner", "mod", "member"))
    extra = {"synapse": {"admin_token": hs_admin.access_token}}
    async with running_bot(server, tmp_path, admins=[owner.user_id], extra=extra) as bot:
        async with (
            await TestUser.login(server.base_url, owner) as o,
            await TestUser.login(server.base_url, mod) as m,
            await TestUser.login(server.base_url, member) as u,
            httpx.AsyncClient(timeout=30) as http,
        ):
            o_dm, m_dm, u_dm = [await dm_with(x, bot.user_id) for x in (o, m, u)]
            assert body(await o.ask(o_dm, f"!role {mod.user_id} moderator", sender=bot.user_id))

            # A plain member cannot make, list or revoke tokens.
            for command in ("!invite-token", "!invite-tokens", "!invite-token revoke abc"):
                refused = body(await u.ask(u_dm, command, sender=bot.user_id))
                assert refused.startswith(f"⚠️ I don't know the command `{command.split()[0]}`")

            # In a group room the token is not posted, and none is made.
            room = await group_room(o, bot.user_id, mod.user_id, name="lobby")
            await m.join(room)
            for command in ("!invite-token", "!invite-tokens"):
                assert body(await m.ask(room, command, sender=bot.user_id)) == f"⚠️ {PRIVATE_ONLY}"
            url, headers = admin_api(server, hs_admin.access_token)
            assert (await http.get(url, headers=headers)).json()["registration_tokens"] == []

            # The moderator makes one in their DM with the bot.
            asked_at = time.time()
            made = body(
                await m.ask(m_dm, "!invite-token --uses 1 --expires 2d", sender=bot.user_id)
            )
            match = TOKEN_IN_REPLY.match(made)
            assert match, made
            token = match.group(1)
            assert "It lets one newcomer sign up on the homeserver" in made
            url, headers = admin_api(server, hs_admin.access_token, token)
            at_synapse = (await http.get(url, headers=headers)).json()
            assert at_synapse["uses_allowed"] == 1 and at_synapse["completed"] == 0
            assert abs(at_synapse["expiry_time"] / 1000 - (asked_at + 2 * 86400)) < 60

            # A newcomer registers with it; a second one cannot.
            newcomer = f"newcomer-{secrets.token_hex(3)}"
            registered = await register_with_token(server, newcomer, token)
            assert registered.status_code == 200, registered.text
            assert registered.json()["user_id"] == f"@{newcomer}:{server.server_name}"
            at_synapse = (await http.get(url, headers=headers)).json()
            assert (at_synapse["pending"], at_synapse["completed"]) == (0, 1)
            again = await register_with_token(server, f"{newcomer}-2", token)
            assert again.status_code == 401
            assert again.json()["errcode"] == "M_UNAUTHORIZED"
            assert again.json()["error"] == "Invalid registration token"

            # The list shows it used up, with its maker; a token made elsewhere too.
            tokens_url, _ = admin_api(server, hs_admin.access_token)
            foreign = (
                await http.post(f"{tokens_url}/new", json={"uses_allowed": 3}, headers=headers)
            ).json()["token"]
            listed = body(await m.ask(m_dm, "!invite-tokens", sender=bot.user_id))
            assert listed.startswith("**2 invite tokens**, 1 usable:")
            assert f"- `{token}` — **used up** (1 of 1); made by {mod.user_id}" in listed
            assert (
                f"- `{foreign}` — 3 of 3 uses left, expires never; not made by me (maker unknown)"
                in listed
            )

            # Revoking: Synapse forgets it; revoking again says so.
            revoked = body(await m.ask(m_dm, f"!invite-token revoke {token}", sender=bot.user_id))
            assert revoked == (
                "Revoked: no one can sign up with that token any more (1 account made with it)."
            )
            assert (await http.get(url, headers=headers)).status_code == 404
            twice = body(await m.ask(m_dm, f"!invite-token revoke {token}", sender=bot.user_id))
            assert twice == "⚠️ The homeserver has no such invite token (revoked already?)."
            # A token pasted in a group room can be revoked right there, without being repeated.
            in_room = body(await m.ask(room, f"!invite-token revoke {foreign}", sender=bot.user_id))
            assert in_room.startswith("Revoked:") and foreign not in in_room
            listed = body(await m.ask(m_dm, "!invite-tokens", sender=bot.user_id))
            assert listed == "There are no invite tokens. `!invite-token` makes one."

            # Audited, with only a hint of the token.
            audit = body(await o.ask(o_dm, "!audit 10", sender=bot.user_id))
            assert audit.count("`invite_token.create`") == 1
            assert audit.count("`invite_token.revoke`") == 2
            assert f"{token[:4]}…" in audit and token not in audit and foreign not in audit


async def test_the_admin_api_refusals_reach_the_moderator_in_words(
    token_synapse, synapse, tmp_path
):
    for part in "abc":
        (tmp_path / part).mkdir()
    # An admin token of an account that is not a server admin.
    not_admin = token_synapse.fresh_account("notadmin")
    mod = token_synapse.fresh_account("mod")
    extra = {"synapse": {"admin_token": not_admin.access_token}}
    async with running_bot(token_synapse, tmp_path / "a", admins=[mod.user_id], extra=extra) as bot:
        async with await TestUser.login(token_synapse.base_url, mod) as m:
            dm = await dm_with(m, bot.user_id)
            refused = body(await m.ask(dm, "!invite-token", sender=bot.user_id))
            assert refused.startswith(
                "⚠️ The account of the bot's `[synapse] admin_token` is not a server admin"
            )
            assert not_admin.access_token not in refused
            listed = body(await m.ask(dm, "!invite-tokens", sender=bot.user_id))
            assert listed == refused

    # A homeserver where registration is disabled (the shared test Synapse): no token is made.
    hs_admin = synapse.fresh_account("hsadmin", admin=True)
    mod = synapse.fresh_account("mod")
    extra = {"synapse": {"admin_token": hs_admin.access_token}}
    async with running_bot(synapse, tmp_path / "b", admins=[mod.user_id], extra=extra) as bot:
        async with await TestUser.login(synapse.base_url, mod) as m:
            dm = await dm_with(m, bot.user_id)
            refused = body(await m.ask(dm, "!invite-token", sender=bot.user_id))
            assert refused == f"⚠️ {REGISTRATION_CLOSED}"
            async with httpx.AsyncClient(timeout=30) as http:
                url, headers = admin_api(synapse, hs_admin.access_token)
                assert (await http.get(url, headers=headers)).json()["registration_tokens"] == []

    # No admin token configured: the commands say what to set.
    mod = synapse.fresh_account("mod")
    async with running_bot(synapse, tmp_path / "c", admins=[mod.user_id]) as bot:
        async with await TestUser.login(synapse.base_url, mod) as m:
            dm = await dm_with(m, bot.user_id)
            for command in ("!invite-token", "!invite-tokens"):
                assert body(await m.ask(dm, command, sender=bot.user_id)) == f"⚠️ {NOT_CONFIGURED}"
