"""GitHub (plain OAuth2, no ID token): bound on the numeric user id; organisation teams as groups."""

from __future__ import annotations

from bot.community.identity import GroupRoles
from bot.community.identity_sync import IdentitySync, Status
from bot.community.roles import Role
from bot.community.users import UserService
from bot.config import load_config
from bot.store.sealed_tokens import SealedTokens
from tests.harness.github_stub import GitHubStub
from tests.harness.sso_web import Browser, running_web
from web_callback.providers import HttpClient, configured_providers


def github_provider(stub: GitHubStub, **extra) -> dict:
    return {
        "id": "github", "kind": "github", "client_id": stub.client_id,
        "client_secret": stub.client_secret, "github_url": stub.url,
        "github_api_url": f"{stub.url}/api", **extra,
    }  # fmt: skip


async def link(web, mxid: str) -> str:
    browser = Browser()
    try:
        token = await web.links.issue(mxid)
        return (
            await browser.get(await browser.through_hostile_provider(web, token, "github"))
        ).text
    finally:
        await browser.close()


async def test_github_binds_on_numeric_id_with_org_teams_as_groups(tmp_path):
    async with GitHubStub() as stub:
        provider = github_provider(
            stub, github_org="example-org", moderator_groups=["example-org/maintainers"]
        )
        async with running_web(tmp_path, [provider]) as web:
            page = await link(web, "@octo:example.org")
            assert "You are linked" in page and "octocat" in page and "GitHub" in page
            [binding] = await web.identity.bindings_of("@octo:example.org")
            assert (binding.issuer, binding.subject) == (stub.url, "583231")
            assert binding.email == "octocat@github.example"  # from /user/emails: /user had none
            assert binding.groups == ("example-org", "example-org/maintainers")
            assert await UserService(web.db, []).role_of("@octo:example.org") is Role.MODERATOR


async def test_github_without_org_gives_no_groups_and_renames_do_not_matter(tmp_path):
    async with GitHubStub() as stub:
        async with running_web(
            tmp_path, [github_provider(stub, admin_groups=["example-org"])]
        ) as web:
            await link(web, "@octo:example.org")
            [binding] = await web.identity.bindings_of("@octo:example.org")
            assert binding.groups == ()
            assert await UserService(web.db, []).role_of("@octo:example.org") is Role.USER
            # The login name changes; the numeric id does not: still the same binding.
            stub.user["login"] = "octocat-renamed"
            await link(web, "@octo:example.org")
            [binding] = await web.identity.bindings_of("@octo:example.org")
            assert (binding.subject, binding.username) == ("583231", "octocat-renamed")


async def test_github_token_kept_sealed_reads_teams_again_and_a_revoked_app_goes_stale(tmp_path):
    async with GitHubStub() as stub:
        provider = github_provider(
            stub, github_org="example-org", moderator_groups=["example-org/maintainers"]
        )
        async with running_web(tmp_path, [provider]) as web:
            await link(web, "@octo:example.org")
            config = load_config(tmp_path / "web.toml")
            tokens = SealedTokens.from_config(None, config.data.dir)
            http = HttpClient()
            sync = IdentitySync(
                web.db, configured_providers(config, http), tokens,
                group_roles={"github": GroupRoles((), ("example-org/maintainers",))},
                bootstrap_admins=[],
            )  # fmt: skip
            try:
                users = UserService(web.db, [])
                assert await users.role_of("@octo:example.org") is Role.MODERATOR
                stub.teams = [t for t in stub.teams if t["slug"] != "maintainers"]
                [outcome] = await sync.resync_member("@octo:example.org", actor="@admin:x")
                assert outcome.status is Status.CHANGED
                assert await users.role_of("@octo:example.org") is Role.USER
                [binding] = await web.identity.bindings_of("@octo:example.org")
                assert binding.groups == ("example-org",)

                stub.revoke_tokens()  # the member revoked the app's access at GitHub
                [outcome] = await sync.resync_member("@octo:example.org", actor="@admin:x")
                assert outcome.status is Status.STALE
                [binding] = await web.identity.bindings_of("@octo:example.org")
                assert binding.stale
            finally:
                await http.aclose()
