"""Kick, ban, unban and invite: in this room, another (--room) or every moderated room (--all)."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry
from bot.commands.reply import Reply
from bot.community.markdown import escape_markdown
from bot.community.moderation import RoomActionError, RoomOutcome
from bot.community.permissions import Party, Refused
from bot.community.policy_lists import PolicyError
from bot.community.roles import Role

registry = Registry(uses=("moderation",))

WHERE = [
    Flag("room", Kind.ROOM, help="another room, by alias or id"),
    Flag("all", help="every community room I am in"),
]
PAST = {"kick": "kicked", "ban": "banned", "unban": "unbanned"}
ON_LIST = Flag("list", Kind.WORD, help="also publish (or withdraw) the rule on this ban list")


def report_rooms(done_text: str, outcomes: list[RoomOutcome]) -> Reply:
    """`done_text` + the rooms where it worked, then one line per room where it did not."""
    if not outcomes:
        return Reply("I am in no community room, so there was nothing to do.")
    done = [o for o in outcomes if o.ok]
    lines = []
    if done:
        lines.append(f"{done_text} {', '.join(escape_markdown(o.room_name) for o in done)}.")
    lines += [f"⚠️ {escape_markdown(o.problem or '')}" for o in outcomes if not o.ok]
    return Reply("\n\n".join(lines))


async def _sanction(ctx: CommandContext, args: Args, action: str) -> Reply:
    moderation = ctx.services.moderation
    on_list = args.get("list")
    # With --list, a command sent in a DM only publishes (or withdraws) the rule.
    list_only = on_list and ctx.is_direct and not args.room and not args.all
    try:
        rooms = [] if list_only else await moderation.rooms_for(
            args.room, every=args.all, current=ctx.room_id, current_is_dm=ctx.is_direct,
            actor=Party(ctx.sender, ctx.role),
        )  # fmt: skip
        outcomes = await moderation.sanction(
            action,
            Party(ctx.sender, ctx.role),
            args.user,
            rooms,
            reason=args.get("reason"),  # type: ignore[arg-type]
        )
    except (Refused, RoomActionError) as problem:
        return Reply.error(str(problem))
    reply = report_rooms(f"{escape_markdown(args.user)} {PAST[action]} in", outcomes)
    if action == "kick" or (action == "unban" and not on_list and not _lists_used(ctx)):
        return reply
    return await ban_list_effect(ctx, args, action, outcomes, reply, list_only=bool(list_only))


def _lists_used(ctx: CommandContext) -> bool:
    return ctx.services.lists is not None


async def ban_list_effect(
    ctx: CommandContext, args: Args, action: str, outcomes: list[RoomOutcome], reply: Reply,
    *, list_only: bool,
) -> Reply:  # fmt: skip
    """The ban-list side of !ban and !unban: a manual ban becomes the moderator's own (a rule
    withdrawn later does not lift it); --list publishes the rule; !unban withdraws our rules."""
    lists = ctx.services.lists
    on_list = args.get("list")
    if lists is None:
        return Reply.error("Ban lists are not available here.") if on_list else reply
    lines = [] if list_only else [reply.markdown]
    try:
        if action == "ban":
            await lists.adopt_manual_ban(args.user, [o.room_id for o in outcomes if o.ok])
            if on_list:
                name = await lists.publish_ban(ctx.sender, on_list, args.user, args.get("reason"))
                lines.append(
                    f"Published a ban rule for {escape_markdown(args.user)} on the list "
                    f"**{escape_markdown(name)}**: it applies in every community room."
                )
        else:
            changed = await lists.withdraw_ban(ctx.sender, args.user, on_list)
            if changed:
                lines.append(
                    f"Withdrew the ban rule for {escape_markdown(args.user)} from "
                    f"{', '.join(f'**{escape_markdown(n)}**' for n in changed)}: the bans it "
                    "caused are lifted."
                )
            elif list_only:
                lines.append(f"No list of ours has a rule for {escape_markdown(args.user)}.")
    except (PolicyError, RoomActionError) as problem:
        lines.append(f"⚠️ {escape_markdown(str(problem))}")
    return Reply("\n\n".join(lines))


@registry.command(
    "kick", help="Remove a member from the room (they may come back).", role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)], flags=WHERE,
    area="moderation",
)  # fmt: skip
async def kick(ctx: CommandContext, args: Args) -> Reply:
    return await _sanction(ctx, args, "kick")


@registry.command(
    "ban", help="Ban a member from the room.", role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)],
    flags=[*WHERE, ON_LIST], area="moderation", uses=("lists",),
)  # fmt: skip
async def ban(ctx: CommandContext, args: Args) -> Reply:
    return await _sanction(ctx, args, "ban")


@registry.command(
    "unban", help="Lift a ban (and withdraw our ban lists' rule for the member).",
    role=Role.MODERATOR, args=[Arg("user", Kind.USER)], flags=[*WHERE, ON_LIST],
    area="moderation", uses=("lists",),
)  # fmt: skip
async def unban(ctx: CommandContext, args: Args) -> Reply:
    return await _sanction(ctx, args, "unban")


@registry.command(
    "invite", help="Invite someone to a room.", role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("room", Kind.ROOM)], area="moderation",
)  # fmt: skip
async def invite(ctx: CommandContext, args: Args) -> Reply:
    try:
        outcome = await ctx.services.moderation.invite(
            Party(ctx.sender, ctx.role), args.user, args.room
        )
    except RoomActionError as problem:
        return Reply.error(str(problem))
    if not outcome.ok:
        return Reply.error(outcome.problem or "")
    return Reply(f"Invited {escape_markdown(args.user)} to {escape_markdown(outcome.room_name)}.")
