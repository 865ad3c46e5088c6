"""Per-room welcome settings: show, set the template, switch on or off, try it."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Kind, Registry
from bot.commands.reply import Reply
from bot.community.markdown import code_span
from bot.community.roles import Role
from bot.community.welcome import Joiner, render_greeting, template_problem

registry = Registry(uses=("moderation", "welcome"))
PLACEHOLDERS = ("{name}", "{mention}", "{room}", "{login_hint}")


@registry.command(
    "welcome",
    help="Show or change how I greet newcomers in this room.",
    role=Role.MODERATOR,
    args=[
        Arg("action", Kind.CHOICE, choices=("show", "set", "on", "off", "test")),
        Arg(
            "template",
            Kind.TEXT,
            required=False,
            help="for set: the message, with " + ", ".join(PLACEHOLDERS),
        ),
    ],
    area="community",
)
async def welcome(ctx: CommandContext, args: Args) -> Reply:
    service = ctx.services.welcome
    action = args.action
    if action == "set":
        template = args.template or ""
        if template_problem(template) is not None:
            return Reply.error(f"The template may only use {', '.join(PLACEHOLDERS)} in braces.")
        if not template.strip():
            return Reply.error(f"Give the message: `{ctx.prefix}welcome set Welcome {{mention}}!`")
        await service.change(ctx.room_id, ctx.sender, template=template)
        return Reply(f"New welcome for this room: {code_span(template)}")
    if args.template:
        return Reply.error(f"`{ctx.prefix}welcome {action}` takes nothing after it.")
    if action in ("on", "off"):
        await service.change(ctx.room_id, ctx.sender, enabled=action == "on")
        return Reply(f"Welcomes are now **{action}** in this room.")
    settings = await service.settings(ctx.room_id)
    if action == "show":
        source = "this room" if "template" in settings.overridden else "the config"
        return Reply(
            f"Welcomes in this room: **{'on' if settings.enabled else 'off'}**. "
            f"Template (from {source}): {code_span(settings.template)}"
        )
    name = ctx.services.moderation.actions.room_name(ctx.room_id)
    greeting = render_greeting(
        settings.template, [Joiner(ctx.sender, None)], set(), name, ctx.prefix
    )
    return Reply(f"This is how a newcomer would be greeted:\n\n{greeting.markdown}")
