"""Commands everyone has: help and ping."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Command, Registry
from bot.commands.reply import Reply
from bot.community.markdown import code_span

registry = Registry(uses=("commands",))


def command_list(commands: list[Command], prefix: str, areas: list[str]) -> str:
    """Markdown list of commands grouped by area; also used for the README reference."""
    lines: list[str] = []
    for area in areas:
        in_area = [c for c in commands if c.area == area]
        if not in_area:
            continue
        lines.append(f"**{area.capitalize()}**")
        lines.append("")
        lines.extend(f"- `{c.usage(prefix)}` — {c.help}" for c in in_area)
        lines.append("")
    return "\n".join(lines).strip()


def command_details(command: Command, prefix: str) -> str:
    lines = [f"`{command.usage(prefix)}`", "", command.help]
    if command.details:
        lines += ["", command.details]
    described = [a for a in command.args if a.help] + [f for f in command.flags if f.help]
    if described:
        lines.append("")
        lines.extend(f"- `{item.usage()}` {item.help}" for item in described)
    if command.aliases:
        lines += ["", "Also: " + ", ".join(f"`{prefix}{a}`" for a in command.aliases)]
    lines += ["", f"Needs role: {command.role.label}."]
    return "\n".join(lines)


@registry.command(
    "help",
    help="List the commands you may use, or explain one.",
    args=[Arg("command", required=False, help="a command to explain")],
    aliases=("commands",),
    allowed_when_inactive=True,
)
async def help_command(ctx: CommandContext, args: Args) -> Reply:
    p = ctx.prefix
    catalog = ctx.services.commands
    assert catalog is not None
    if args.command:
        name = args.command.removeprefix(p)
        command = catalog.resolve(name)
        if command is None or command.role > ctx.role:
            return Reply.error(
                f"There is no command {code_span(p + name)}. Send `{p}help` for the list."
            )
        return Reply(command_details(command, p))
    visible = catalog.visible_to(ctx.role)
    body = command_list(visible, p, catalog.areas())
    return Reply(f"{body}\n\nSend `{p}help <command>` for details.")


@registry.command("ping", help="Check that I am here and how quickly your message reached me.")
async def ping(ctx: CommandContext, args: Args) -> Reply:
    return Reply(f"Pong! Your message reached me in {ctx.latency_ms():.0f} ms.")
