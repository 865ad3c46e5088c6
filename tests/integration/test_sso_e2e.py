"""The whole login story as a member lives it: `!login` in Matrix, a real browser, a real
OpenID provider, and the bot's confirmation back in Matrix."""

from __future__ import annotations

import re

import pytest
from nio import RoomPreset

from tests.harness.bot import running_bot
from tests.harness.matrix_user import TestUser
from tests.harness.synapse import free_port
from tests.integration.test_bot_core import dm_with, wait_for_invite_and_join

pytestmark = pytest.mark.synapse

LINK = re.compile(r"<(http://127\.0\.0\.1:\d+/login/[A-Za-z0-9_-]{43,})>")


def sso_options(oidc_provider, client_id: str) -> dict:
    web_port = free_port()
    secret = f"{client_id}-secret-0123456789abcdef"
    oidc_provider.add_client(client_id, secret, [f"http://127.0.0.1:{web_port}/callback"])
    provider = {
        "id": "community", "name": "Community SSO", "issuer": oidc_provider.issuer,
        "client_id": client_id, "client_secret": secret,
        "scopes": ["openid", "profile", "email", "groups"],
        "admin_groups": ["admins"], "moderator_groups": ["moderators"],
    }  # fmt: skip
    return {"web_port": web_port, "extra": {"sso": {"providers": [provider]}}}


async def test_login_link_in_a_real_browser_binds_and_the_bot_confirms(
    synapse, oidc_provider, chromium, artifacts_dir, tmp_path
):
    oidc_provider.set_account(
        "carla", email="carla@example.org", name="Carla", groups=["moderators"]
    )
    account = synapse.fresh_account("carla")
    async with running_bot(synapse, tmp_path, **sso_options(oidc_provider, "e2e-browser")) as bot:
        async with await TestUser.login(synapse.base_url, account) as carla:
            room = await dm_with(carla, bot.user_id)
            link_message = await carla.ask(room, "!login", sender=bot.user_id)
            body = link_message["content"]["body"]
            assert "It works once, for 10 minutes, only for you." in body
            url = LINK.search(body).group(1)
            assert f'<a href="{url}"' in link_message["content"]["formatted_body"]

            context = await chromium.new_context()
            # The provider's dev pages load a web font; this machine has no internet.
            await context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
            page = await context.new_page()
            await page.goto(url)
            await page.screenshot(path=artifacts_dir / "1-confirm.png", full_page=True)
            assert f"You are linking {account.user_id}" in await page.inner_text("main")

            await page.click("text=Continue with Community SSO")
            await page.wait_for_selector("input[name=login]")
            await page.screenshot(path=artifacts_dir / "2-provider-login.png", full_page=True)
            await page.fill("input[name=login]", "carla")
            await page.fill("input[name=password]", "any-password")
            await page.click("button[type=submit]")
            await page.wait_for_selector("text=Authorize")
            await page.screenshot(path=artifacts_dir / "3-provider-consent.png", full_page=True)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r".*/callback\?.*"))
            await page.screenshot(path=artifacts_dir / "4-linked.png", full_page=True)
            text = await page.inner_text("main")
            assert "You are linked" in text and "carla (Community SSO), role: moderator" in text
            await context.close()

            confirmation = await carla.wait_for_message(
                room, sender=bot.user_id, after_event_id=link_message["event_id"], timeout=15
            )
            assert confirmation["content"]["body"] == (
                "You are now linked as **carla** (Community SSO), role: moderator."
            )
            assert confirmation["content"]["formatted_body"] == (
                "You are now linked as <strong>carla</strong> (Community SSO), role: moderator."
            )
            whoami = await carla.ask(room, "!whoami", sender=bot.user_id)
            assert f"You are {account.user_id}, role: **moderator**." in whoami["content"]["body"]
            assert "Linked: carla (Community SSO), email carla@example.org, groups moderators" in (
                whoami["content"]["body"].replace("**", "")
            )
    for name in ("1-confirm", "2-provider-login", "3-provider-consent", "4-linked"):
        assert (artifacts_dir / f"{name}.png").stat().st_size > 1000


async def test_login_in_a_room_sends_the_link_by_dm_and_unlink_confirms(
    synapse, oidc_provider, tmp_path
):
    from tests.harness.oidc import complete_login
    from tests.harness.sso_web import Browser

    oidc_provider.set_account("dan", groups=["admins"])
    async with running_bot(synapse, tmp_path, **sso_options(oidc_provider, "e2e-room")) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("dan")) as dan:
            room = await dan.create_room(invite=[bot.user_id], name="general")
            await dan.wait_for_membership(room, bot.user_id, "join", timeout=15)
            other = synapse.fresh_account("eve")
            await dan.invite(room, other.user_id)  # not a DM: eve is invited
            await dan.send_text(room, "someone else is here")  # chat in a room: no answer
            answer = await dan.ask(room, "!login", sender=bot.user_id)
            assert answer["content"]["body"] == "I sent you your login link in a direct message."
            assert not LINK.search(answer["content"]["body"])

            dm = await wait_for_invite_and_join(dan, bot.user_id)
            link_message = await dan.wait_for_message(dm, sender=bot.user_id, timeout=15)
            url = LINK.search(link_message["content"]["body"]).group(1)

            browser = Browser()
            try:
                page = await browser.get(url)
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                started = await browser.http.post(
                    f"{url}/start", data={"csrf": csrf, "provider": "community"}
                )
                leaving = await complete_login(
                    browser.http, started.headers["location"], username="dan"
                )
                done = await browser.get(leaving.headers["location"])
                assert done.status_code == 200 and "role: <strong>admin</strong>" in done.text
            finally:
                await browser.close()
            confirmation = await dan.wait_for_message(
                dm, sender=bot.user_id, after_event_id=link_message["event_id"], timeout=15
            )
            assert (
                confirmation["content"]["body"]
                == "You are now linked as **dan** (Community SSO), role: admin."
            )

            refused = await dan.ask(room, f"!user {dan.user_id}", sender=bot.user_id)
            assert refused["content"]["body"].startswith(
                "⚠️ I show members' details"
            )  # not in a room
            details = await dan.ask(dm, f"!user {dan.user_id}", sender=bot.user_id)
            body = details["content"]["body"]
            assert body.startswith(f"{dan.user_id}: role **admin** (from SSO groups), active.")
            assert "Linked: **dan** (Community SSO)" in body and "groups admins" in body

            preview = await dan.ask(room, "!unlink", sender=bot.user_id)
            assert "Send `!unlink --yes` to confirm." in preview["content"]["body"]
            done = await dan.ask(room, "!unlink --yes", sender=bot.user_id)
            assert done["content"]["body"].startswith("Done: the link to")
            whoami = await dan.ask(room, "!whoami", sender=bot.user_id)
            assert (
                "role: **user**" in whoami["content"]["body"]
                or "role: user" in whoami["content"]["body"]
            )
            assert "not linked" in whoami["content"]["body"]


async def test_login_without_providers_says_so(synapse, tmp_path):
    async with running_bot(synapse, tmp_path) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("fin")) as fin:
            room = await dm_with(fin, bot.user_id)
            reply = await fin.ask(room, "!login", sender=bot.user_id)
            assert (
                reply["content"]["body"]
                == "⚠️ Single sign-on is not set up on this bot yet; ask the operators."
            )


async def test_login_in_a_public_room_of_two_still_goes_by_private_dm(
    synapse, oidc_provider, tmp_path
):
    async with running_bot(synapse, tmp_path, **sso_options(oidc_provider, "e2e-public")) as bot:
        async with await TestUser.login(synapse.base_url, synapse.fresh_account("gil")) as gil:
            room = await gil.create_room(
                invite=[bot.user_id], name="open", preset=RoomPreset.public_chat
            )
            await gil.wait_for_membership(room, bot.user_id, "join", timeout=15)
            answer = await gil.ask(room, "!login", sender=bot.user_id)
            assert answer["content"]["body"] == "I sent you your login link in a direct message."
            assert not any(
                LINK.search(e["content"].get("body", ""))
                for e in gil.events(room)
                if "content" in e
            )
            dm = await wait_for_invite_and_join(gil, bot.user_id)
            assert dm != room
            link_message = await gil.wait_for_message(dm, sender=bot.user_id, timeout=15)
            assert LINK.search(link_message["content"]["body"])
            # In that DM, the link comes straight back without the notice.
            again = await gil.ask(dm, "!login", sender=bot.user_id)
            assert LINK.search(again["content"]["body"])
