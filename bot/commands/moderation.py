"""Kick, ban, unban and invite: in this room, another (--room) or every moderated room (--all)."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry
from bot.commands.reply import Reply
from bot.community.markdown import escape_markdown
from bot.community.moderation import RoomActionError, RoomOutcome
from bot.community.permissions import Party, Refused
from bot.community.roles import Role

registry = Registry(uses=("moderation",))

WHERE = [
    Flag("room", Kind.ROOM, help="another room, by alias or id"),
    Flag("all", help="every community room I am in"),
]
PAST = {"kick": "kicked", "ban": "banned", "unban": "unbanned"}


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
    try:
        rooms = await moderation.rooms_for(
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
    return report_rooms(f"{escape_markdown(args.user)} {PAST[action]} in", outcomes)


@registry.command(
    "kick", help="Remove a member from the room (they may come back).", role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)], flags=WHERE,
    area="moderation",
)  # fmt: skip
async def kick(ctx: CommandContext, args: Args) -> Reply:
    return await _sanction(ctx, args, "kick")


@registry.command(
    "ban", help="Ban a member from the room.", role=Role.MODERATOR,
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)], flags=WHERE,
    area="moderation",
)  # fmt: skip
async def ban(ctx: CommandContext, args: Args) -> Reply:
    return await _sanction(ctx, args, "ban")


@registry.command(
    "unban", help="Lift a ban.", role=Role.MODERATOR, args=[Arg("user", Kind.USER)], flags=WHERE,
    area="moderation",
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
