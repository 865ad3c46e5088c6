"""`!summary`: a catch-up summary of the room's recent messages, of what the caller could see."""

from __future__ import annotations

from datetime import timedelta

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Flag, Kind, Registry, UsageError
from bot.commands.reply import Reply
from bot.community.chat import ChatRefused, ModelError
from bot.community.markdown import quoted
from bot.community.summaries import SummaryRequest
from bot.durations import compact_duration, read_duration

registry = Registry(uses=("summaries",))

MAX_COUNT = 10_000


def take_what(words: list[str]) -> tuple[SummaryRequest, int]:
    """`N`, `since <duration>` or `unread` (nothing: the default count)."""
    if not words:
        return SummaryRequest(), 0
    first = words[0].lower()
    if first == "unread":
        return SummaryRequest(unread=True), 1
    if first == "since":
        parsed = read_duration(words, 1)
        if parsed is None or parsed[0] <= 0:
            raise UsageError("give a time after `since`, like `since 2h` or `since 1 day`")
        return SummaryRequest(since=timedelta(seconds=parsed[0])), 1 + parsed[1]
    if first.isascii() and first.isdigit() and len(first) <= 6:
        count = int(first)
        if not 1 <= count <= MAX_COUNT:
            raise UsageError(f"the number of messages must be from 1 to {MAX_COUNT:,}")
        return SummaryRequest(count=count), 1
    raise UsageError(f"{quoted(words[0])} is not a number of messages, `since <time>` or `unread`")


def _messages(count: int) -> str:
    return "1 message" if count == 1 else f"{count:,} messages"


def _describe(request: SummaryRequest, count: int) -> str:
    if request.unread:
        return f"what you have not read yet ({_messages(count)})"
    if request.since is not None:
        return f"the last {compact_duration(request.since)} ({_messages(count)})"
    return "the last message" if count == 1 else f"the last {_messages(count)}"


@registry.command(
    "summary",
    help="Summarise the room's recent messages: the last N, `since <time>` or your `unread`.",
    args=[Arg("what", Kind.RAW, required=False, take=take_what, metavar="N|since <time>|unread")],
    flags=[Flag("dm", help="send the summary by direct message")],
    area="assistant",
    details=(
        "Only messages you could see yourself are read: none from before you joined (unless the "
        "room shares its history), none from while you were away, none that were deleted. The "
        "summary counts against your daily assistant quota. Examples: `summary 100`, "
        "`summary since 3h`, `summary unread --dm`."
    ),
)
async def summary(ctx: CommandContext, args: Args) -> Reply:
    request: SummaryRequest = args.what or SummaryRequest()
    summaries = ctx.services.summaries
    if summaries is None:
        return Reply.error("Summaries need the assistant, which is not set up here.")

    async def made() -> Reply:  # the model's answer takes long: the room's next commands go on
        try:
            result = await summaries.summarise(ctx.sender, ctx.room_id, request)
        except ChatRefused as refused:
            return Reply.error(str(refused))
        except ModelError as problem:
            return Reply.error(str(problem))
        text = f"**Summary of {_describe(request, result.summarised)}**"
        if result.left_out:
            text += f" ({result.left_out} older ones did not fit)"
        if result.note:
            text += f"\n\n*{result.note}*"
        text += f"\n\n{result.text}"
        if args.dm and not ctx.is_direct:
            return Reply("I sent you the summary by direct message.", direct_markdown=text)
        return Reply(text, in_thread=not ctx.is_direct)

    return Reply.when_ready(made)
