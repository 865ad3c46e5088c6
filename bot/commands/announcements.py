"""Announcements: now, or on a schedule kept across restarts."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.moderation import report_rooms
from bot.commands.registry import Arg, Args, Kind, Registry, UsageError, parse_room
from bot.commands.reply import Reply
from bot.community.announcements import EVERY_ROOM
from bot.community.markdown import code_span, escape_markdown
from bot.community.moderation import RoomActionError
from bot.community.permissions import Party
from bot.community.roles import Role
from bot.community.schedules import ScheduleError, parse_schedule, parse_when, when_length
from bot.store.models import utcnow

registry = Registry(uses=("announcements", "moderation"))


WHEN_FORMS = "`in 2h`, `at 2026-12-24 18:00`, `every day 08:30`, `every monday 09:00`"


def _target(word: str) -> str:
    """A room id or alias, or `all` (every community room)."""
    return EVERY_ROOM if word.lower() == EVERY_ROOM else parse_room(word)


def _when(words: list[str]) -> tuple[list[str], int]:
    """The words of a `<when>`: as many as the schedule grammar reads."""
    try:
        used = when_length(words)
    except ScheduleError as problem:
        raise UsageError(str(problem).rstrip(".")) from None
    return words[:used], used


WHERE = Arg("room", convert=_target, metavar="#room|!id|all",
            missing="Say where and what after the time")  # fmt: skip


async def _rooms(ctx: CommandContext, target: str) -> list[str]:
    moderation = ctx.services.moderation
    if target == EVERY_ROOM:
        return moderation.actions.community_rooms()
    return [await moderation.community_room(target, Party(ctx.sender, ctx.role))]


@registry.command(
    "announce",
    help="Post a message now, in one room or in every community room I am in.",
    role=Role.MODERATOR,
    args=[Arg("room", convert=_target, metavar="#room|!id|all"), Arg("message", Kind.TEXT)],
    area="community",
)
async def announce(ctx: CommandContext, args: Args) -> Reply:
    try:
        rooms = await _rooms(ctx, args.room)
    except RoomActionError as problem:
        return Reply.error(
            f"{str(problem).rstrip('.')}. Usage: `{ctx.prefix}announce <#room|!id|all> <message…>`"
        )
    outcomes = await ctx.services.moderation.announce(
        ctx.sender, rooms, args.message, key=ctx.event_id
    )
    return report_rooms("Announced in", outcomes)


@registry.command(
    "schedule",
    help="Post a message later or regularly: " + WHEN_FORMS + ".",
    role=Role.MODERATOR,
    args=[
        Arg("when", Kind.RAW, take=_when, metavar="when"),
        WHERE,
        Arg("message", Kind.TEXT, missing="Say where and what after the time"),
    ],
    area="community",
    details=f"Times are in the bot's time zone. Forms: {WHEN_FORMS}, `every weekday 09:00`, `every 2h`.",
)
async def schedule(ctx: CommandContext, args: Args) -> Reply:
    usage = f"Usage: `{ctx.prefix}schedule <when> <#room|!id|all> <message…>`"
    announcements = ctx.services.announcements
    try:
        plan, _ = parse_when(args.when, utcnow(), announcements.tz)
        target = args.room
        if target != EVERY_ROOM:
            target = await ctx.services.moderation.community_room(
                target, Party(ctx.sender, ctx.role)
            )
    except (ScheduleError, RoomActionError) as problem:
        return Reply.error(f"{str(problem).rstrip('.')}. {usage}")
    planned = await announcements.plan(ctx.sender, target, args.message, plan, room_id=ctx.room_id)
    where = (
        "every community room"
        if target == EVERY_ROOM
        else ctx.services.moderation.actions.room_name(target)
    )
    return Reply(
        f"Scheduled #{planned.id}: {plan.describe(announcements.tz)}, in {escape_markdown(where)}. "
        f"`{ctx.prefix}unschedule {planned.id}` cancels it."
    )


@registry.command(
    "schedules", help="List scheduled announcements.", role=Role.MODERATOR, area="community"
)
async def schedules(ctx: CommandContext, args: Args) -> Reply:
    announcements = ctx.services.announcements
    items = await announcements.active()
    if not items:
        return Reply("Nothing is scheduled.")
    lines = ["**Scheduled announcements:**", ""]
    tz = announcements.tz
    for item in items:
        when = parse_schedule(item.schedule, utcnow(), tz).describe(tz)
        where = (
            "all rooms"
            if item.target == EVERY_ROOM
            else ctx.services.moderation.actions.room_name(item.target)
        )
        nxt = (
            item.next_run_at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if item.next_run_at else "—"
        )
        preview = item.body if len(item.body) <= 60 else item.body[:57] + "…"
        lines.append(
            f"- #{item.id} {when}, in {escape_markdown(where)}, next {nxt}: {code_span(preview)}"
        )
    return Reply("\n".join(lines))


@registry.command(
    "unschedule",
    help="Cancel a scheduled announcement.",
    role=Role.MODERATOR,
    args=[Arg("id", Kind.INT, help="its number, as !schedules shows it")],
    area="community",
)
async def unschedule(ctx: CommandContext, args: Args) -> Reply:
    if await ctx.services.announcements.cancel(args.id, ctx.sender, room_id=ctx.room_id):
        return Reply(f"Cancelled #{args.id}.")
    return Reply.error(
        f"There is no scheduled announcement #{args.id}. `{ctx.prefix}schedules` lists them."
    )
