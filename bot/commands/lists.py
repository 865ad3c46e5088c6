"""Shared ban lists: follow a policy room (as Draupnir and Mjolnir publish), stop, show."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Kind, Registry, UsageError, parse_room
from bot.commands.reply import Reply
from bot.community.markdown import code_span, escape_markdown
from bot.community.moderation import RoomActionError
from bot.community.policy_lists import ListSummary, PolicyError
from bot.community.roles import Role

registry = Registry(uses=("lists",))


def _line(summary: ListSummary) -> str:
    return (
        f"- **{escape_markdown(summary.name)}** — {escape_markdown(summary.room_name)} "
        f"({code_span(summary.room_id)}): {summary.users} user, {summary.servers} server"
        f" and {summary.rooms} room rules; {summary.bans} bans in force from it"
    )


@registry.command(
    "lists",
    help="Shared ban lists (policy rooms): show them, subscribe, unsubscribe.",
    details=(
        "`subscribe <#room> [name]` follows a policy room: its `m.ban` rules ban matching "
        "members of the community rooms (now, on every join and on every new rule) and its "
        "server rules become the rooms' server ACL. A withdrawn rule lifts exactly the bans it "
        "caused. `unsubscribe <#room|name>` stops following (the bans stay). The name is what "
        "`!ban … --list <name>` publishes to."
    ),
    role=Role.ADMIN,
    args=[
        Arg("action", Kind.CHOICE, choices=("show", "subscribe", "unsubscribe")),
        Arg("room", Kind.WORD, required=False, metavar="#room|!id|name"),
        Arg("name", Kind.WORD, required=False, help="a short name for the list"),
    ],
    area="moderation",
)
async def lists(ctx: CommandContext, args: Args) -> Reply:
    service = ctx.services.lists
    if service is None:
        return Reply.error("Ban lists are not available here.")
    action = args.action
    try:
        if action == "show":
            if args.room:
                return Reply.error(f"`{ctx.prefix}lists show` takes nothing after it.")
            summaries = await service.show()
            if not summaries:
                return Reply(
                    f"I follow no ban list. `{ctx.prefix}lists subscribe #list:server` adds one."
                )
            return Reply("**Ban lists I follow:**\n\n" + "\n".join(map(_line, summaries)))
        if not args.room:
            return Reply.error(f"Say which list: `{ctx.prefix}lists {action} #list:server`.")
        if action == "subscribe":
            room = parse_room(args.room)
            summary = await service.subscribe(ctx.sender, room, args.name)
            return Reply(
                f"Following **{escape_markdown(summary.name)}** "
                f"({escape_markdown(summary.room_name)}): {summary.users} user and "
                f"{summary.servers} server rules; {summary.bans} bans now in force from it."
            )
        if args.name:
            return Reply.error(f"`{ctx.prefix}lists unsubscribe` takes one list.")
        name = await service.unsubscribe(ctx.sender, args.room)
        return Reply(
            f"No longer following **{escape_markdown(name)}**. The bans it caused stay; its "
            "server rules left the server ACLs."
        )
    except (PolicyError, RoomActionError, UsageError) as problem:
        return Reply.error(str(problem))
