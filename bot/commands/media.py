"""The assistant's pictures and voice: `!image` makes a picture; moderators switch images in and
spoken answers per room with `!media`."""

from __future__ import annotations

from bot.commands.context import CommandContext
from bot.commands.registry import Arg, Args, Kind, Registry
from bot.commands.reply import Reply
from bot.community.assistant_media import MediaRefused
from bot.community.chat import ChatRefused, ModelError
from bot.community.markdown import escape_markdown, shorten
from bot.community.roles import Role

registry = Registry(uses=("chat", "media"))

PROMPT_LIMIT = 4_000  # characters of a picture's description sent to the model


@registry.command(
    "image",
    help="Ask the assistant for a picture.",
    args=[Arg("prompt", Kind.TEXT, help="what the picture should show")],
    area="assistant",
    details="It counts against your daily assistant quota (a fixed number of tokens a picture).",
)
async def image(ctx: CommandContext, args: Args) -> Reply:
    media = ctx.services.media
    if media is None:
        return Reply.error("The assistant is switched off on this bot.")
    prompt = args.prompt.strip()
    if not prompt:
        return Reply.error(f"Say what the picture should show: `{ctx.prefix}image a red fox`")

    async def made() -> Reply:  # a picture takes long: the room's next commands go on
        try:
            picture = await media.generate_image(
                room_id=ctx.room_id, sender=ctx.sender, prompt=prompt[:PROMPT_LIMIT]
            )
        except (MediaRefused, ChatRefused, ModelError) as refused:
            return Reply.error(str(refused))
        return Reply(escape_markdown(shorten(prompt, 200)), extra={"image": picture})

    return Reply.when_ready(made)


SWITCHES = {"vision": "images in (the model looks at images members send)",
            "voice": "spoken answers (answers also as voice messages)"}  # fmt: skip


@registry.command(
    "media",
    help="Show or switch the assistant's images in and spoken answers for this room.",
    role=Role.MODERATOR,
    args=[
        Arg("what", Kind.CHOICE, choices=("show", "vision", "voice"), required=False),
        Arg("state", Kind.CHOICE, choices=("on", "off", "default"), required=False),
    ],
    area="assistant",
    details=(
        "`vision on` lets the model here see images (only for a model that can); `voice on` "
        "sends answers also as voice messages (when the operator set up speech). `default` "
        "follows the config again."
    ),
)
async def media(ctx: CommandContext, args: Args) -> Reply:
    service = ctx.services.media
    if service is None:
        return Reply.error("The assistant is switched off on this bot.")
    what = args.what or "show"
    if what == "show":
        room = await ctx.services.chat.room_settings(ctx.room_id)
        vision_room, speak_room = await service.room_switches(ctx.room_id)
        vision = await service.vision_on(ctx.room_id, room.model)
        speak = await service.speak_on(ctx.room_id)
        s = service.settings

        def state(on: bool, room_value: bool | None) -> str:
            return f"**{'on' if on else 'off'}** ({'this room' if room_value is not None else 'global'})"

        return Reply(
            f"Images in: {state(vision, vision_room)}. "
            f"Voice messages in: **{'on' if s.transcription_model else 'off'}** (config). "
            f"Spoken answers: {state(speak, speak_room)}"
            + ("" if s.speech_model else " (no speech model configured)")
            + f". Pictures (`{ctx.prefix}image`): **{'on' if s.image_model else 'off'}** (config)."
        )
    if args.state is None:
        return Reply.error(f"Say `on`, `off` or `default`: `{ctx.prefix}media {what} on`")
    on = None if args.state == "default" else args.state == "on"
    name = "vision" if what == "vision" else "speak"
    await service.set_room_switch(ctx.room_id, ctx.sender, name, on)
    if on is None:
        return Reply(f"{SWITCHES[what].capitalize()}: this room follows the config again.")
    note = ""
    if name == "speak" and on and not service.settings.speech_model:
        note = " (The operator has not set up speech yet: `[gpt] speech_model`.)"
    return Reply(f"{SWITCHES[what].capitalize()}: **{args.state}** in this room.{note}")
