"""Linking a Matrix account to the community's SSO: login, whoami, unlink; moderators: user."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Registry, parse_user
from bot.commands.reply import Reply
from bot.commands.services import LoginSettings
from bot.community.identity import Binding
from bot.community.identity_sync import outcome_text
from bot.community.markdown import escape_markdown
from bot.community.roles import Role

registry = Registry(uses=("identity", "login_links", "identity_sync"))


def login_link_message(settings: LoginSettings, token: str) -> str:
    return (
        f"Open this link to connect your Matrix account to your community account "
        f"({', '.join(settings.providers.values())}):\n\n<{settings.url_for(token)}>\n\n"
        f"It works once, for {settings.link_ttl_minutes} minutes, only for you. Do not share it."
    )


def _when(binding_time) -> str:  # type: ignore[no-untyped-def]
    return binding_time.strftime("%Y-%m-%d %H:%M UTC")


def describe_binding(binding: Binding, provider_label: str) -> str:
    parts = [
        f"**{escape_markdown(binding.username or binding.subject)}** ({escape_markdown(provider_label)})"
    ]
    if binding.email:
        parts.append(f"email {escape_markdown(binding.email)}")
    if binding.groups:
        parts.append("groups " + ", ".join(escape_markdown(g) for g in binding.groups))
    parts.append(f"linked {_when(binding.linked_at)}")
    parts.append(f"last login {_when(binding.last_login_at)}")
    if binding.synced_at and binding.synced_at > binding.last_login_at:
        parts.append(f"groups read again {_when(binding.synced_at)}")
    if binding.stale:
        parts.append("**stale: the provider no longer confirms it (log in again)**")
    return ", ".join(parts)


@registry.command(
    "login",
    help="Get a one-time link to connect your Matrix account to your community account.",
    area="account",
)
async def login(ctx: CommandContext, args: Args) -> Reply:
    settings = ctx.services.login
    if not settings.providers:
        return Reply.error("Single sign-on is not set up on this bot yet; ask the operators.")
    token = await ctx.services.login_links.issue(ctx.sender)
    link_text = login_link_message(settings, token)
    # The link goes only to a DM; where this is that DM, the notice is not needed.
    return Reply("I sent you your login link in a direct message.", direct_markdown=link_text)


@registry.command(
    "whoami",
    help="Show your role and the community account your Matrix ID is linked to.",
    area="account",
    allowed_when_inactive=True,
)
async def whoami(ctx: CommandContext, args: Args) -> Reply:
    bindings = await ctx.services.identity.bindings_of(ctx.sender)
    lines = [f"You are {escape_markdown(ctx.sender)}, role: **{ctx.role.label}**."]
    if not bindings:
        lines.append(f"You are not linked to a community account yet. Send `{ctx.prefix}login`.")
    for binding in bindings:
        lines.append(
            "Linked: "
            + describe_binding(binding, ctx.services.login.provider_name(binding.provider_id))
        )
    return Reply("\n\n".join(lines))


@registry.command(
    "unlink",
    help="Remove the link between your Matrix ID and your community account.",
    flags=[Flag("yes", help="confirm; without it you see what would be removed")],
    area="account",
)
async def unlink(ctx: CommandContext, args: Args) -> Reply:
    identity = ctx.services.identity
    bindings = await identity.bindings_of(ctx.sender)
    if not bindings:
        return Reply("You are not linked to a community account, so there is nothing to remove.")
    names = ", ".join(
        f"**{escape_markdown(b.username or b.subject)}** "
        f"({escape_markdown(ctx.services.login.provider_name(b.provider_id))})"
        for b in bindings
    )
    if not args.yes:
        return Reply(
            f"This removes the link to {names}; your role goes back to user. "
            f"Send `{ctx.prefix}unlink --yes` to confirm."
        )
    await identity.unlink(ctx.sender, actor=ctx.sender)
    return Reply(f"Done: the link to {names} is removed. Send `{ctx.prefix}login` to link again.")


def _member_or_all(token: str) -> str:
    return "all" if token.lower() == "all" else parse_user(token)


@registry.command(
    "resync",
    help="Read a member's groups (or every linked member's) again from their identity "
    "provider; role and group-gated rooms follow.",
    role=Role.ADMIN,
    args=[
        Arg(
            "who",
            convert=_member_or_all,
            metavar="@member|all",
            missing="say whose groups to read again: a member, or `all`",
        ),
    ],
    area="account",
    details="Linked members are also resynced on a schedule (`[sso] resync_interval`). "
    "`all` runs in the background, in small batches, and posts its summary here.",
)
async def resync(ctx: CommandContext, args: Args) -> Reply:
    sync = ctx.services.identity_sync
    if sync is None:
        return Reply.error("Resyncing is not available on this bot.")
    if args.who == "all":
        count = await sync.linked_count()
        if not count:
            return Reply("No member is linked yet: there is nothing to resync.")
        if not sync.start_full_run(actor=ctx.sender, report_room=ctx.room_id):
            return Reply(
                "A resync of all members is already under way; its summary goes where it was asked."
            )
        return Reply(
            f"Reading the groups of {count:,} linked member binding(s) again, in small batches. "
            "I will post the summary here."
        )
    outcomes = await sync.resync_member(args.who, actor=ctx.sender)
    who = escape_markdown(args.who)
    if not outcomes:
        return Reply(f"{who} is not linked to a community account: there is nothing to resync.")
    lines = [f"Resync of {who}:"]
    for outcome in outcomes:
        name = escape_markdown(ctx.services.login.provider_name(outcome.provider_id))
        lines.append(f"- {name}: {outcome_text(outcome)}")
    return Reply("\n".join(lines))
