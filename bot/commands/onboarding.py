"""Onboarding: invite tokens (registration tokens on the homeserver) for newcomers.

`!invite-token revoke <token>` is the same command as `!invite-token`: its optional first
argument is the two words `revoke <token>`, so the registry derives one usage line, one help entry
and one row of the README reference for making and revoking."""

from __future__ import annotations

from datetime import datetime

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry, UsageError
from bot.commands.reply import Reply
from bot.community.invite_tokens import (
    DEFAULT_LIFETIME,
    DEFAULT_USES,
    InviteTokenError,
    InviteTokenInfo,
    InviteTokens,
)
from bot.community.markdown import code_span, escape_markdown, quoted
from bot.community.roles import Role
from bot.durations import compact_duration, parse_duration

registry = Registry(uses=("invite_tokens",))
LIST_LIMIT = 50

NOT_CONFIGURED = (
    "Invite tokens are made with the homeserver's admin API, and the bot has no access to it. "
    "The bot's operator must set `[synapse] admin_token` (or `admin_token_file`) to a Synapse "
    "server admin's access token and restart the bot; Synapse itself needs "
    "`enable_registration: true` and `registration_requires_token: true`."
)
PRIVATE_ONLY = (
    "I show invite tokens only in a direct chat with me or in the admin room, where no one else "
    "can pick them up: ask me there."
)


def _revoke(words: list[str]) -> tuple[str | None, int]:
    """`revoke <token>`: the token; nothing when the first word is not `revoke`."""
    if not words or words[0].lower() != "revoke":
        return None, 0
    if len(words) < 2:
        raise UsageError("say which token to revoke")
    return words[1], 2


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _service(ctx: CommandContext) -> InviteTokens | None:
    return ctx.services.invite_tokens  # type: ignore[no-any-return]


def _uses(info: InviteTokenInfo) -> str:
    if info.uses_allowed is None:
        return f"no limit on uses ({info.completed:,} so far)"
    plural = "s" if info.uses_allowed != 1 else ""
    return f"{info.uses_left:,} of {info.uses_allowed:,} use{plural} left"


def _describe(info: InviteTokenInfo, now: datetime) -> str:
    if info.uses_allowed is not None and info.completed >= info.uses_allowed:
        state = f"**used up** ({info.completed:,} of {info.uses_allowed:,})"
    elif info.expired(now):
        state = f"**expired** {_when(info.expires_at)} ({info.completed:,} used)"
    else:
        state = f"{_uses(info)}, expires {_when(info.expires_at)}"
    if info.pending:
        state += f", {info.pending:,} registration{'s' if info.pending != 1 else ''} under way"
    maker = (
        f"made by {escape_markdown(info.created_by)}"
        if info.created_by
        else "not made by me (maker unknown)"
    )
    return f"- {code_span(info.token)} — {state}; {maker}"


@registry.command(
    "invite-token",
    help="Make a registration token for newcomers to sign up on the homeserver with, "
    "or revoke one.",
    role=Role.MODERATOR,
    args=[
        Arg(
            "revoke",
            Kind.RAW,
            required=False,
            take=_revoke,
            metavar="revoke <token>",
            help="revoke this token instead of making one",
        ),
    ],
    flags=[
        Flag(
            "uses", Kind.INT, help=f"how many people may sign up with it (default {DEFAULT_USES})"
        ),
        Flag(
            "expires",
            Kind.WORD,
            help="how long it is valid, e.g. 12h, 7d, 2w (default "
            f"{compact_duration(DEFAULT_LIFETIME)})",
        ),
    ],
    area="onboarding",
    details="The token is shown only in a direct chat with me or in the admin room. "
    "Revoking works anywhere: a token pasted in a room is best revoked right there.",
)
async def invite_token(ctx: CommandContext, args: Args) -> Reply:
    service = _service(ctx)
    if service is None:
        return Reply.error(NOT_CONFIGURED)
    if args.revoke is not None:
        if args.uses is not None or args.expires is not None:
            return Reply.error(
                "--uses and --expires are for making a token, not for revoking one. "
                f"Usage: `{ctx.prefix}invite-token revoke <token>`"
            )
        try:
            gone = await service.revoke(ctx.sender, args.revoke, room_id=ctx.room_id)
        except InviteTokenError as problem:
            return Reply.error(str(problem))
        used = f"{gone.completed:,} account{'s' if gone.completed != 1 else ''} made with it"
        # The token itself is not repeated: the room may be one where it should not be seen.
        return Reply(f"Revoked: no one can sign up with that token any more ({used}).")
    if not (ctx.is_direct or ctx.in_admin_room):
        return Reply.error(PRIVATE_ONLY)
    uses = DEFAULT_USES if args.uses is None else args.uses
    lifetime = DEFAULT_LIFETIME
    if args.expires is not None:
        parsed = parse_duration(args.expires)
        if parsed is None:
            return Reply.error(
                f"--expires takes a duration like 12h, 7d or 2w, not {quoted(args.expires)}."
            )
        lifetime = parsed
    try:
        made = await service.create(ctx.sender, uses, lifetime, room_id=ctx.room_id)
    except InviteTokenError as problem:
        return Reply.error(str(problem))
    who = "one newcomer" if made.uses_allowed == 1 else f"{made.uses_allowed:,} newcomers"
    return Reply(
        f"Invite token: {code_span(made.token)}\n\n"
        f"It lets {who} sign up on the homeserver, until {_when(made.expires_at)}: they enter it "
        "when their Matrix client asks for a registration token. "
        f"`{ctx.prefix}invite-token revoke {made.token}` takes it back."
    )


@registry.command(
    "invite-tokens",
    help="List the homeserver's registration tokens: uses left, expiry, who made them.",
    role=Role.MODERATOR,
    area="onboarding",
)
async def invite_tokens(ctx: CommandContext, args: Args) -> Reply:
    service = _service(ctx)
    if service is None:
        return Reply.error(NOT_CONFIGURED)
    if not (ctx.is_direct or ctx.in_admin_room):
        return Reply.error(PRIVATE_ONLY)
    try:
        tokens = await service.list()
    except InviteTokenError as problem:
        return Reply.error(str(problem))
    if not tokens:
        return Reply(f"There are no invite tokens. `{ctx.prefix}invite-token` makes one.")
    now = service.now()
    usable = sum(t.usable(now) for t in tokens)
    lines = [
        f"**{len(tokens):,} invite token{'s' if len(tokens) != 1 else ''}**, {usable:,} usable:",
        "",
        *(_describe(t, now) for t in tokens[:LIST_LIMIT]),
    ]
    if len(tokens) > LIST_LIMIT:
        lines.append(f"- …and {len(tokens) - LIST_LIMIT:,} more")
    return Reply("\n".join(lines))
