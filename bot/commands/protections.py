"""`!protect` (a room's protections: show, switch, set) and `!mute` / `!unmute` (by hand, and the
undo of an automatic mute)."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry
from bot.commands.reply import Reply
from bot.community.markdown import escape_markdown
from bot.community.moderation import RoomActionError
from bot.community.permissions import Party, Refused
from bot.community.protection_settings import NAMES, SettingError
from bot.community.roles import Role

registry = Registry(uses=("protections", "moderation"))

ROOM = [Flag("room", Kind.ROOM, help="another room, by alias or id")]
WHERE = [*ROOM, Flag("all", help="every community room I am in")]


async def _rooms(ctx: CommandContext, args: Args, *, every: bool = False) -> list[str]:
    return await ctx.services.moderation.rooms_for(
        args.room, every=every, current=ctx.room_id, current_is_dm=ctx.is_direct,
        actor=Party(ctx.sender, ctx.role),
    )  # fmt: skip


@registry.command(
    "protect", role=Role.MODERATOR, area="moderation",
    help="Show or change this room's protections against spam and raids.",
    args=[
        Arg("what", Kind.CHOICE, choices=("show", "on", "off", "set", "reopen"), required=False),
        Arg("name", required=False, metavar="protection"),
        Arg("key", required=False),
        Arg("value", Kind.TEXT, required=False),
    ],
    flags=ROOM,
    details=f"Protections: {', '.join(NAMES)}. `set <protection> <key> <value>` overrides one "
    "setting of `[protections]` for this room; `reopen` ends a join wave's cool-down now.",
)  # fmt: skip
async def protect(ctx: CommandContext, args: Args) -> Reply:
    service = ctx.services.protections
    what = args.what or "show"
    try:
        [room_id] = await _rooms(ctx, args)
        if what == "show":
            return Reply(service.describe(room_id))
        if what == "reopen":
            done = await service.reopen(room_id, actor=ctx.sender)
            return Reply("Reopened." if done else "This room is not closed.")
        if not args.name:
            raise SettingError(f"say which protection: {', '.join(NAMES)}")
        if what in ("on", "off"):
            if args.key or args.value:
                raise SettingError(f"`{what}` takes only the protection's name")
            shown = await service.set_option(room_id, args.name, "enabled", what, ctx.sender)
            return Reply(f"{escape_markdown(args.name)} is {shown} in this room.")
        if not args.key or not args.value:
            raise SettingError("usage: set <protection> <key> <value>")
        shown = await service.set_option(room_id, args.name, args.key, args.value, ctx.sender)
    except (SettingError, RoomActionError) as problem:
        return Reply.error(str(problem))
    return Reply(
        f"{escape_markdown(args.name)} {escape_markdown(args.key)} is now "
        f"{escape_markdown(shown)} in this room."
    )


def _report(
    verb: str, user: str, ctx: CommandContext, outcomes: list[tuple[str, str | None]]
) -> Reply:
    if not outcomes:
        return Reply("I am in no community room, so there was nothing to do.")
    names = ctx.services.moderation.actions.room_name
    done = [names(room) for room, problem in outcomes if problem is None]
    lines = (
        [f"{escape_markdown(user)} {verb} in {', '.join(map(escape_markdown, done))}."]
        if done
        else []
    )
    lines += [f"⚠️ {escape_markdown(problem)}" for _, problem in outcomes if problem]
    return Reply("\n\n".join(lines))


@registry.command(
    "mute", role=Role.MODERATOR, area="moderation",
    help="Silence a member (power level below what sending needs); `!unmute` undoes it.",
    args=[Arg("user", Kind.USER), Arg("reason", Kind.TEXT, required=False)], flags=WHERE,
)  # fmt: skip
async def mute(ctx: CommandContext, args: Args) -> Reply:
    try:
        rooms = await _rooms(ctx, args, every=args.all)
        outcomes = await ctx.services.protections.mute_by_hand(
            Party(ctx.sender, ctx.role), args.user, rooms, args.get("reason")
        )
    except (Refused, RoomActionError) as problem:
        return Reply.error(str(problem))
    return _report("muted", args.user, ctx, outcomes)


@registry.command(
    "unmute", role=Role.MODERATOR, area="moderation",
    help="Let a muted member speak again (the power level they had before).",
    args=[Arg("user", Kind.USER)], flags=WHERE,
)  # fmt: skip
async def unmute(ctx: CommandContext, args: Args) -> Reply:
    try:
        rooms = await _rooms(ctx, args, every=args.all)
        outcomes = await ctx.services.protections.unmute(
            Party(ctx.sender, ctx.role), args.user, rooms
        )
    except RoomActionError as problem:
        return Reply.error(str(problem))
    return _report("unmuted", args.user, ctx, outcomes)
