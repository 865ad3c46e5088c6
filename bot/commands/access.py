"""Group-gated rooms (`[[access.rooms]]`): `!access check @member` shows one member's rooms,
`!access sync [--dry-run]` brings every governed room in line (admins)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry
from bot.commands.reply import Reply
from bot.community.access import BAN, INVITE, JOIN, KNOCK, LEAVE, RoomPlan, Standing
from bot.community.access_service import Applied
from bot.community.markdown import code_span, escape_markdown
from bot.community.roles import Role

registry = Registry(uses=("access",))
SHOWN = 10  # members named per list; the rest are counted

NOT_CONFIGURED = (
    "No room follows SSO groups here: there is no `[[access.rooms]]` in my configuration "
    "(see config.example.toml)."
)
PRIVATE_ONLY = (
    "I show members' groups and rooms only in a direct chat with me or in the admin room."
)
WHERE_IS = {
    JOIN: "joined",
    INVITE: "invited",
    LEAVE: "not in it (left)",
    BAN: "banned",
    KNOCK: "not in it (knocking)",
}


def names(members: Sequence[str], limit: int = SHOWN) -> str:
    """`@a, @b, … and 12 more`: a long list stays short."""
    shown = ", ".join(escape_markdown(m) for m in members[:limit])
    return f"{shown} and {len(members) - limit:,} more" if len(members) > limit else shown


def _room(plan: RoomPlan) -> str:
    return f"**{escape_markdown(plan.name)}**"


def _problem(plan: RoomPlan) -> str:
    again = " Try again in a moment." if plan.transient else ""
    return f"⚠️ {escape_markdown(plan.problem or '')}{again}"


def render_check(who: Standing, plans: Sequence[RoomPlan]) -> str:
    groups = ", ".join(code_span(g) for g in sorted(who.groups)) or "none"
    lines = [
        f"{escape_markdown(who.mxid)}: role **{who.role.label}**, groups from confirmed "
        f"bindings: {groups}.",
        "",
    ]
    invite, remove = [], []
    for plan in plans:
        grounds = plan.room.grounds(who)
        if plan.problem is not None:
            should = "belongs" if grounds else "does not belong"
            lines.append(f"- {_room(plan)}: {should}; I cannot manage it: {_problem(plan)}")
            continue
        should = f"belongs ({', '.join(grounds)})" if grounds else "does not belong"
        where = WHERE_IS.get(plan.states.get(who.mxid, ""), "not in it")
        held = [f"⚠️ {escape_markdown(h.why)}" for h in plan.held if h.member == who.mxid]
        line = f"- {_room(plan)}: {should}; {where}"
        if who.mxid in plan.invite:
            line += " → to invite"
            invite.append(plan)
        elif who.mxid in plan.remove:
            line += " → to remove"
            remove.append(plan)
        elif held:
            line += " — " + "; ".join(held)
        else:
            line += " ✓"
        lines.append(line)
    lines.append("")
    troubled = any(p.problem is not None or any(h.member == who.mxid for h in p.held)
                   for p in plans)  # fmt: skip
    if not invite and not remove:
        lines.append(
            "**Difference**: none that I can make (⚠️ above)."
            if troubled else "**Difference**: none, they are where they belong."
        )  # fmt: skip
    else:
        parts = []
        if invite:
            parts.append(f"invite to {', '.join(_room(p) for p in invite)}")
        if remove:
            parts.append(f"remove from {', '.join(_room(p) for p in remove)}")
        lines.append(f"**Difference**: {'; '.join(parts)}.")
    return "\n".join(lines)


def _room_block(plan: RoomPlan, invited: Sequence[str], removed: Sequence[str],
                failed: Sequence[str], *, done: bool) -> str:  # fmt: skip
    lines = [_room(plan)]
    if plan.problem is not None:
        return "\n".join([*lines, f"- {_problem(plan)}"])
    verbs = ("invited", "removed") if done else ("invite", "remove")
    if invited:
        lines.append(f"- {verbs[0]} {len(invited):,}: {names(invited)}")
    if removed:
        lines.append(f"- {verbs[1]} {len(removed):,}: {names(removed)}")
    by_why: dict[str, list[str]] = {}
    for h in plan.held:
        by_why.setdefault(h.why, []).append(h.member)
    for why, members in by_why.items():
        lines.append(f"- ⚠️ {escape_markdown(why)}: {len(members):,} ({names(members)})")
    if failed:
        more = f" and {len(failed) - SHOWN:,} more" if len(failed) > SHOWN else ""
        lines.append(f"- ⚠️ failed {len(failed):,}: {'; '.join(failed[:SHOWN])}{more}")
    if plan.declined:
        lines.append(
            f"- {len(plan.declined):,} who belong left or declined by themselves: not invited "
            "again (their next link or group change does)"
        )
    if len(lines) == 1:
        lines.append(f"- nothing to change ({len(plan.keep):,} in it who belong)")
    return "\n".join(lines)


def render_preview(plans: Sequence[RoomPlan], prefix: str) -> str:
    invites = sum(len(p.invite) for p in plans)
    removals = sum(len(p.remove) for p in plans)
    blocks = [
        f"**Dry run**, nothing changed: {invites:,} to invite and {removals:,} to remove "
        f"in {len(plans):,} governed room(s)."
    ]
    blocks += [_room_block(p, p.invite, p.remove, (), done=False) for p in plans]
    blocks.append(f"Send `{prefix}access sync` to apply.")
    return "\n\n".join(blocks)


def render_sync(applied: Sequence[Applied]) -> str:
    invited = sum(len(a.invited) for a in applied)
    removed = sum(len(a.removed) for a in applied)
    troubled = sum(a.troubled for a in applied)
    head = (
        f"**Access sync done**: {invited:,} invited, {removed:,} removed "
        f"in {len(applied):,} governed room(s)"
    )
    head += f"; {troubled:,} with problems." if troubled else "."
    blocks = [head]
    for a in applied:
        failed = [f"{escape_markdown(h.member)}: {escape_markdown(h.why)}" for h in a.failed]
        blocks.append(_room_block(a.plan, a.invited, a.removed, failed, done=True))
    return "\n\n".join(blocks)


@registry.command(
    "access",
    help="Rooms that follow SSO groups: check a member's rooms, or bring every such room in "
    "line (`sync`, admins only).",
    role=Role.MODERATOR,
    args=[
        Arg("action", Kind.CHOICE, choices=("check", "sync")),
        Arg("user", Kind.USER, required=False, help="for check: the member"),
    ],
    flags=[Flag("dry-run", help="for sync: show what would change, and change nothing")],
    area="members",
    details="The rooms are the config's `[[access.rooms]]`. `check @member` shows the rooms the "
    "member belongs in, the rooms they are in, and the difference. `sync` invites everyone who "
    "belongs and removes (kicks, never bans) everyone joined or invited who does not, except "
    "those whose power level is not below mine; `--dry-run` only lists it. Both answer only in "
    "a direct chat with me or in the admin room; `sync` only in the admin room when one is set.",
)
async def access(ctx: CommandContext, args: Args) -> Reply:
    service = ctx.services.access
    if service is None or not service.configured:
        return Reply(NOT_CONFIGURED)
    if args.action == "check":
        if args.user is None:
            return Reply.error(f"Say whose rooms to check: `{ctx.prefix}access check @member`.")
        if args.dry_run:
            return Reply.error(f"--dry-run goes with `{ctx.prefix}access sync`.")
        if not (ctx.is_direct or ctx.in_admin_room):
            return Reply.error(PRIVATE_ONLY)
        who, plans = await service.check(args.user)
        return Reply(render_check(who, plans))
    if ctx.role < Role.ADMIN:
        return Reply.error(f"`{ctx.prefix}access sync` is for admins.")
    if args.user is not None:
        return Reply.error(
            f"`{ctx.prefix}access sync` takes no member: it brings every governed room in line. "
            f"For one member: `{ctx.prefix}access check @member`."
        )
    if service.admin_room_id is not None and not ctx.in_admin_room:
        return Reply.error(f"`{ctx.prefix}access sync` works only in the admin room.")
    if not (ctx.is_direct or ctx.in_admin_room):
        return Reply.error(PRIVATE_ONLY)
    if args.dry_run:
        return Reply(render_preview(await service.plan_all(), ctx.prefix))
    return Reply(render_sync(await service.sync(ctx.sender)))
