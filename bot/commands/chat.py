"""The assistant: ask in rooms, reset a conversation, see usage; moderators tune it per room,
admins set quotas."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Kind, Registry
from bot.commands.reply import Reply
from bot.community.markdown import code_span, escape_markdown
from bot.community.roles import Role

registry = Registry(uses=("chat",))


@registry.command(
    "ask",
    help="Ask the assistant; in a room the answer opens a thread, where you can keep talking.",
    args=[Arg("question", Kind.TEXT)],
    area="assistant",
    details="In a direct message you need no command: every message is a question.",
)
async def ask(ctx: CommandContext, args: Args) -> Reply:
    return Reply("", chat_prompt=args.question)


@registry.command(
    "reset",
    help="Start a fresh conversation with the assistant (here, or in this thread).",
    area="assistant",
)
async def reset(ctx: CommandContext, args: Args) -> Reply:
    if not ctx.is_direct and ctx.thread_root is None:
        return Reply(
            f"In a room each thread is its own conversation: send `{ctx.prefix}reset` inside the "
            "thread you want to start afresh."
        )
    thread = None if ctx.is_direct else ctx.thread_root
    if await ctx.services.chat.reset(ctx.room_id, thread, ctx.sender):
        return Reply(
            "Done: the assistant has forgotten this conversation. The next message starts a new one."
        )
    return Reply("There was no conversation to reset here.")


@registry.command(
    "usage",
    help="Show how many assistant tokens you used today, and your daily quota.",
    area="assistant",
)
async def usage(ctx: CommandContext, args: Args) -> Reply:
    chat = ctx.services.chat
    today = await chat.usage_today(ctx.sender, ctx.role)
    if today.quota == 0:
        return Reply(f"Today you used {today.used:,} tokens. You have no daily limit.")
    percent = min(100, round(100 * today.used / today.quota))
    text = f"Today you used {today.used:,} of your {today.quota:,} tokens ({percent}%)."
    if today.exhausted:
        text += " " + chat.quota_message(today)
    else:
        text += " The quota resets at 00:00 UTC."
    return Reply(text)


GPT_ACTIONS = ("show", "model", "prompt", "on", "off", "reset", "context", "reasoning")
MAX_ROOM_CONTEXT = 200


@registry.command(
    "gpt",
    help="Show or change the assistant's settings for this room.",
    role=Role.MODERATOR,
    args=[
        Arg(
            "action",
            Kind.CHOICE,
            choices=GPT_ACTIONS,
            help="show, model, prompt, on, off, reset, context or reasoning",
        ),
        Arg("value", Kind.TEXT, required=False, help="the model name or system prompt"),
    ],
    area="assistant",
    details=(
        "Room settings win over the global ones in the config; `reset` goes back to those. "
        "`context <N|off|default>`: questions see the room's last N messages (only those the "
        "asker could see) and answers stay in the room instead of opening threads. "
        "`reasoning <show|hide|default>`: a reasoning model's thinking shown folded above answers."
    ),
)
async def gpt(ctx: CommandContext, args: Args) -> Reply:
    chat = ctx.services.chat
    action, value = args.action, args.value
    if action == "show":
        room = await chat.room_settings(ctx.room_id)

        def source(name: str) -> str:
            return "this room" if name in room.overridden else "global"

        return Reply(
            f"Assistant in this room: **{'on' if room.enabled else 'off'}** ({source('enabled')}), "
            f"model {code_span(room.model)} ({source('model')}).\n\n"
            f"System prompt ({source('prompt')}): {escape_markdown(room.prompt)}\n\n"
            f"Room context: {_context_shown(room.context_messages)}; reasoning "
            f"{'shown folded' if room.show_reasoning else 'hidden'}."
        )
    if action in ("context", "reasoning"):
        return await _room_switch(ctx, action, value)
    if action in ("model", "prompt"):
        if not value:
            return Reply.error(f"Give the new {action}: `{ctx.prefix}gpt {action} <{action}>`")
        await chat.change_room_settings(ctx.room_id, ctx.sender, **{action: value})
        shown = code_span(value) if action == "model" else escape_markdown(value)
        return Reply(f"The assistant's {action} in this room is now {shown}.")
    if value:
        return Reply.error(f"`{ctx.prefix}gpt {action}` takes nothing after it.")
    if action == "reset":
        await chat.change_room_settings(ctx.room_id, ctx.sender, reset=True)
        return Reply("This room follows the global assistant settings again.")
    await chat.change_room_settings(ctx.room_id, ctx.sender, enabled=action == "on")
    return Reply(f"The assistant is now **{action}** in this room.")


def _context_shown(count: int) -> str:
    return f"the last {count} messages, answers in the room" if count else "none (threads)"


async def _room_switch(ctx: CommandContext, action: str, value: str | None) -> Reply:
    """`!gpt context <N|off|default>` and `!gpt reasoning <show|hide|default>`."""
    chat = ctx.services.chat
    raw = (value or "").strip().lower()
    if action == "context":
        if raw == "default":
            await chat.change_room_settings(ctx.room_id, ctx.sender, context_messages=None)
            return Reply("Room context in this room follows the global setting again.")
        count = 0 if raw == "off" else int(raw) if raw.isascii() and raw.isdigit() else -1
        if not 0 <= count <= MAX_ROOM_CONTEXT:
            return Reply.error(
                f"Give a number of messages from 0 to {MAX_ROOM_CONTEXT}, `off` or `default`: "
                f"`{ctx.prefix}gpt context 20`"
            )
        await chat.change_room_settings(ctx.room_id, ctx.sender, context_messages=count)
        return Reply(f"Room context in this room: {_context_shown(count)}.")
    if raw not in ("show", "hide", "default"):
        return Reply.error(f"Use `{ctx.prefix}gpt reasoning <show|hide|default>`.")
    shown = None if raw == "default" else raw == "show"
    await chat.change_room_settings(ctx.room_id, ctx.sender, show_reasoning=shown)
    if shown is None:
        return Reply("Showing reasoning in this room follows the global setting again.")
    return Reply(
        "A reasoning model's thinking is now "
        + ("shown folded above its answers" if shown else "hidden")
        + " in this room."
    )


@registry.command(
    "quota",
    help="Set a member's daily assistant token quota (0 = no limit, `default` = the config's).",
    role=Role.ADMIN,
    args=[Arg("user", Kind.USER), Arg("tokens", metavar="tokens|default")],
    area="assistant",
)
async def quota(ctx: CommandContext, args: Args) -> Reply:
    raw = args.tokens.lower()
    if raw == "default":
        tokens = None
    elif raw.isdigit():
        tokens = int(raw)
    else:
        return Reply.error(
            f"tokens must be a whole number or `default`, not {code_span(args.tokens)}. "
            f"Usage: `{ctx.prefix}quota <@user> <tokens|default>`"
        )
    await ctx.services.chat.set_quota(args.user, tokens, ctx.sender)
    who = escape_markdown(args.user)
    if tokens is None:
        return Reply(f"{who} follows the configured daily quota again.")
    return Reply(f"{who} may now use {'unlimited' if tokens == 0 else f'{tokens:,}'} tokens a day.")
