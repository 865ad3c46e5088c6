"""Administering members: find them, see one, change roles, deactivate, forget; audit and stats."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.identity import describe_binding
from bot.commands.registry import Arg, Args, Flag, Kind, Registry
from bot.commands.reply import Reply
from bot.community.identity import MANUAL
from bot.community.markdown import code_span, escape_markdown
from bot.community.members import MemberRow
from bot.community.permissions import Party, Refused
from bot.community.roles import Role

registry = Registry(uses=("audit", "members", "moderation", "chat", "identity"))
PER_PAGE = 20


def _actor(ctx: CommandContext) -> Party:
    return Party(ctx.sender, ctx.role)


PRIVATE_ONLY = (
    "I show members' details (emails among them) only in a direct chat with me "
    "or in the admin room."
)


def _private(ctx: CommandContext) -> bool:
    return ctx.is_direct or ctx.in_admin_room


def _when(moment) -> str:  # type: ignore[no-untyped-def]
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


@registry.command(
    "users",
    help="List or search members (Matrix ID, SSO username or email).",
    role=Role.MODERATOR,
    args=[Arg("query", required=False, help="part of a Matrix ID, username or email")],
    flags=[
        Flag("page", Kind.INT, help="which page of results"),
        Flag("after", Kind.USER, help="the page after this member (what Next: shows)"),
    ],
    area="members",
)
async def users(ctx: CommandContext, args: Args) -> Reply:
    if not _private(ctx):
        return Reply.error(PRIVATE_ONLY)
    usage = f"Usage: `{ctx.prefix}users [query] [--page N | --after @user]`"
    if args.page is not None and args.after is not None:
        return Reply.error(f"Give --page or --after, not both. {usage}")
    page = 1 if args.page is None else args.page
    if page < 1:
        return Reply.error(f"--page starts at 1. {usage}")
    found = await ctx.services.members.search(args.query, page, PER_PAGE, after=args.after)
    if not found.total:
        return Reply("No member matches." if args.query else "No members yet.")
    if found.more:
        header = f"**more than {found.total:,} members**"
    else:
        header = f"**{found.total:,} member{'s' if found.total != 1 else ''}**"
    pages = None if found.more else (found.total + PER_PAGE - 1) // PER_PAGE
    of_pages = f" of {pages:,}" if pages else ""
    if not found.rows:
        where = (
            f"after {escape_markdown(args.after)}" if args.after else f"on page {page:,}{of_pages}"
        )
        return Reply(f"{header}, none {where}.")
    if found.offset is None:
        where = f"after {escape_markdown(args.after)}"
    elif found.offset % PER_PAGE == 0:
        where = f"page {found.offset // PER_PAGE + 1:,}{of_pages}"
    else:
        where = f"numbers {found.offset + 1:,} to {found.offset + len(found.rows):,}"
    lines = [f"{header}, {where}:", ""]
    for r in found.rows:
        sso = escape_markdown(r.username) if r.username else "not linked"
        email = f", {escape_markdown(r.email)}" if r.email else ""
        state = "" if r.active else ", **deactivated**"
        lines.append(f"- {escape_markdown(r.mxid)} — {sso}{email}, {r.role.label}{state}")
    if found.next_after:
        query = f" {args.query}" if args.query else ""
        lines += ["", f"Next: {code_span(f'{ctx.prefix}users{query} --after {found.next_after}')}"]
    return Reply("\n".join(lines))


def _role_source(ctx: CommandContext, member: MemberRow, linked: bool) -> str:
    if member.mxid in ctx.services.members.configured_admins:
        return "from the configuration, [roles] admins"
    if member.role_source == MANUAL:
        return f"set by hand with {ctx.prefix}role"
    return "from SSO groups" if linked else "the default: not linked"


@registry.command(
    "user",
    help="Show a member: role, binding, when they joined and were last active, assistant usage.",
    role=Role.MODERATOR,
    args=[Arg("user", Kind.USER, help="the member, as @name:server or a mention")],
    area="members",
)
async def user(ctx: CommandContext, args: Args) -> Reply:
    if not _private(ctx):
        return Reply.error(PRIVATE_ONLY)
    s = ctx.services
    member = await s.members.details(args.user)
    usage = await s.chat.usage_today(args.user, member.role)
    quota = "no limit" if usage.quota == 0 else f"{usage.quota:,}"
    bindings = await s.identity.bindings_of(args.user)
    lines = [
        f"{escape_markdown(args.user)}: role **{member.role.label}** "
        f"({_role_source(ctx, member, bool(bindings))}), "
        f"{'active' if member.active else 'deactivated'}.",
        f"Known since {_when(member.created_at)}, last active {_when(member.last_seen_at)}.",
        f"Assistant today: {usage.used:,} tokens of {quota}.",
    ]
    if not bindings:
        lines.append("Not linked to a community account.")
    lines += [
        "Linked: " + describe_binding(b, s.login.provider_name(b.provider_id)) for b in bindings
    ]
    return Reply("\n\n".join(lines))


@registry.command(
    "role",
    help="Set a member's role by hand, or hand it back to their SSO groups (`sso`).",
    role=Role.ADMIN,
    args=[
        Arg("user", Kind.USER),
        Arg("role", Kind.CHOICE, choices=("user", "moderator", "admin", "sso")),
    ],
    area="members",
    details="A role set by hand stays until `sso` hands it back: logins and resyncs of the "
    "member's SSO groups do not change it. `[roles] admins` in the configuration beat both.",
)
async def role(ctx: CommandContext, args: Args) -> Reply:
    who = escape_markdown(args.user)
    members = ctx.services.members
    try:
        if args.role == "sso":
            before, after = await members.hand_role_to_sso(
                _actor(ctx), args.user, room_id=ctx.room_id
            )
            return Reply(
                f"{who}'s role follows their SSO groups again: **{after.label}** "
                f"(was {before.label})."
            )
        new = Role.parse(args.role)
        before = await members.set_role(_actor(ctx), args.user, new, room_id=ctx.room_id)
    except Refused as refused:
        return Reply.error(str(refused))
    kept = (
        f"Set by hand: their SSO groups no longer change it "
        f"(`{ctx.prefix}role {args.user} sso` hands it back)."
    )
    if before is new:
        return Reply(f"{who} already is {new.label}. {kept}")
    return Reply(f"{who} is now **{new.label}** (was {before.label}). {kept}")


async def _set_active(ctx: CommandContext, args: Args, active: bool) -> Reply:
    try:
        changed = await ctx.services.members.set_active(
            _actor(ctx), args.user, active, reason=args.get("reason"), room_id=ctx.room_id
        )
    except Refused as refused:
        return Reply.error(str(refused))
    who = escape_markdown(args.user)
    state = "active" if active else "deactivated"
    if not changed:
        return Reply(f"{who} already is {state}.")
    if active:
        return Reply(f"{who} is active again.")
    return Reply(
        f"{who} is deactivated: they can only use `{ctx.prefix}help` and `{ctx.prefix}whoami`."
    )


@registry.command(
    "deactivate",
    help="Deactivate a member: they can use nothing but help and whoami.",
    role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)],
    area="members",
)
async def deactivate(ctx: CommandContext, args: Args) -> Reply:
    return await _set_active(ctx, args, False)


@registry.command(
    "activate",
    help="Undo a deactivation.",
    role=Role.MODERATOR,
    args=[Arg("user", Kind.USER)],
    area="members",
)
async def activate(ctx: CommandContext, args: Args) -> Reply:
    return await _set_active(ctx, args, True)


@registry.command(
    "forget",
    help="Delete a member's binding, assistant history and usage; shows what first.",
    role=Role.ADMIN,
    args=[Arg("user", Kind.USER)],
    flags=[Flag("yes", help="really delete; without it you see what would be deleted")],
    area="members",
)
async def forget(ctx: CommandContext, args: Args) -> Reply:
    members = ctx.services.members
    who = escape_markdown(args.user)
    if not args.yes:
        preview = await members.forget_preview(args.user)
        if preview.empty:
            return Reply(f"I hold nothing about {who} but, at most, their role.")
        return Reply(
            f"This deletes, for {who}: {preview.bindings} SSO binding(s), {preview.messages} assistant "
            f"message(s) (and the answers to them), {preview.usage_days} day(s) of usage. "
            f"The audit log keeps that it happened. Send `{ctx.prefix}forget {args.user} --yes` to do it."
        )
    try:
        done = await members.forget(_actor(ctx), args.user, room_id=ctx.room_id)
    except Refused as refused:
        return Reply.error(str(refused))
    return Reply(
        f"Forgotten: {who} ({done.bindings} binding(s), {done.messages} message(s), "
        f"{done.usage_days} day(s) of usage)."
    )


@registry.command(
    "audit",
    help="Show the most recent audit log entries.",
    role=Role.ADMIN,
    args=[Arg("count", Kind.INT, required=False, help="how many (default 10, at most 50)")],
    area="members",
)
async def audit(ctx: CommandContext, args: Args) -> Reply:
    count = args.count or 10
    if not 1 <= count <= 50:
        return Reply.error(f"count must be from 1 to 50. Usage: `{ctx.prefix}audit [count]`")
    entries = await ctx.services.audit.recent(count)
    if not entries:
        return Reply("The audit log is empty.")
    lines = [f"**Last {len(entries)} audit entries** (newest first):", ""]
    for e in entries:
        parts = [e.at.strftime("%Y-%m-%d %H:%M"), escape_markdown(e.actor), code_span(e.action)]
        if e.target:
            parts.append(escape_markdown(e.target))
        if e.room_id:
            parts.append(f"in {escape_markdown(e.room_id)}")
        if e.reason:
            parts.append(f"— {escape_markdown(e.reason)}")
        lines.append("- " + " ".join(parts))
    return Reply("\n".join(lines))


@registry.command(
    "stats",
    help="Members, linked accounts, activity and assistant tokens today, rooms.",
    role=Role.MODERATOR,
    area="members",
)
async def stats(ctx: CommandContext, args: Args) -> Reply:
    s = await ctx.services.members.stats()
    rooms = len(ctx.services.moderation.actions.community_rooms())
    return Reply(
        f"**Community today:** {s.members:,} members known, {s.linked:,} linked by SSO, "
        f"{s.active_today:,} active today, {s.gpt_tokens_today:,} assistant tokens today, "
        f"{rooms:,} community rooms."
    )
