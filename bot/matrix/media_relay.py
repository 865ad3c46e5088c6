"""Members' images and voice messages to the assistant, and its voice answers, in Matrix terms.

- An m.image in a DM with the bot, or in a room thread the assistant is in, is checked and kept
  (by reference) for the member's next turn; with a caption (MSC2530) the caption is that turn.
- An m.audio (a voice message, `org.matrix.msc3245.voice`, or any audio clip) there is
  transcribed, the transcript shown to the member quoted, and answered as a turn.
- With spoken answers on, an answer is also sent as a voice message.
Refusals (feature off, too large, quota) are short notices, never silence."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import structlog
from nio import AsyncClient

from bot.commands.executor import Message
from bot.community.assistant_media import AssistantMedia, MediaRefused, MediaWithdrawn
from bot.community.chat import ChatRefused, ChatService, ChatTurn, ModelError
from bot.community.markdown import escape_markdown, shorten
from bot.matrix.chat_relay import ChatRelay
from bot.matrix.media import MatrixMedia, media_ref
from bot.matrix.render import markdown_to_plain
from bot.matrix.sender import Sender, SendError
from bot.offload import off_loop
from bot.store.events import EventLedger

log = structlog.get_logger(__name__)

TRANSCRIPT_SHOWN = 4_000  # characters of a transcript quoted back (the whole one is answered)


def caption(content: dict[str, Any]) -> str | None:
    """MSC2530: a media message whose `body` differs from its `filename` carries a caption."""
    body, filename = content.get("body"), content.get("filename")
    if isinstance(body, str) and isinstance(filename, str) and body.strip() and body != filename:
        return body
    return None


class MediaRelay:
    def __init__(
        self,
        media: AssistantMedia,
        files: MatrixMedia,
        relay: ChatRelay,
        sender: Sender,
        client: AsyncClient,
        ledger: EventLedger,
    ) -> None:
        self._media = media
        self._files = files
        self._relay = relay
        self._chat: ChatService = relay.chat
        self._sender = sender
        self._client = client
        self._ledger = ledger

    async def take(
        self, content: dict[str, Any], message: Message
    ) -> Coroutine[Any, Any, None] | None:
        """The work for a member's media message, claimed, or None when it is not for the
        assistant (a file in a room, outside an assistant thread) or was handled before."""
        kind = content.get("msgtype")
        if kind not in ("m.image", "m.audio"):
            return None
        if not message.is_direct and (
            message.thread_root is None
            or not await self._chat.has_conversation(message.room_id, message.thread_root)
        ):
            return None
        if not message.resumed and not await self._ledger.claim(message.event_id, message.room_id):
            return None
        if kind == "m.image":
            return self._image(content, message)
        return self._voice(content, message)

    def _thread(self, message: Message) -> str | None:
        return None if message.is_direct else message.thread_root

    def _sender_name(self, message: Message) -> str | None:
        room = self._client.rooms.get(message.room_id)
        return None if message.is_direct or room is None else room.user_name(message.sender)

    async def _notice(self, message: Message, markdown: str) -> None:
        try:
            await self._sender.send_markdown(
                message.room_id, markdown, reply_to=message.event_id,
                thread_root=self._thread(message),
            )  # fmt: skip
        except SendError as problem:
            log.error("chat.notice_failed", room_id=message.room_id, error=str(problem))

    async def _image(self, content: dict[str, Any], message: Message) -> None:
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        ref = media_ref(content)
        if ref is None:
            await self._notice(message, "⚠️ I cannot read this image: it has no usable file.")
            return
        try:
            accepted = await self._media.accept_image(
                room_id=message.room_id, thread_root=self._thread(message),
                sender=message.sender, event_id=message.event_id, ref=ref,
            )  # fmt: skip
        except MediaWithdrawn:
            return  # the member redacted it meanwhile
        except (MediaRefused, ChatRefused) as refused:
            await self._notice(message, f"⚠️ {refused}")
            return
        text = caption(content)
        if text is not None:  # the caption is the question about the image
            await self._relay.answer_message(
                message, text, sender_name=self._sender_name(message), ledger=self._ledger
            )
            return
        await self._notice(
            message,
            f"🖼️ I have your image ({accepted.width}×{accepted.height}). "
            "Ask me about it in your next message.",
        )

    async def _voice(self, content: dict[str, Any], message: Message) -> None:
        structlog.contextvars.bind_contextvars(room_id=message.room_id, event_id=message.event_id)
        ref = media_ref(content)
        if ref is None:
            await self._notice(message, "⚠️ I cannot read this voice message: it has no file.")
            return
        info = content.get("info") if isinstance(content.get("info"), dict) else {}
        audio = content.get("org.matrix.msc1767.audio")
        duration = info.get("duration")
        if duration is None and isinstance(audio, dict):
            duration = audio.get("duration")
        name = content.get("filename") or content.get("body")
        filename = name[:64] if isinstance(name, str) and "." in name else "voice.ogg"
        try:
            transcript = await self._media.transcribe(
                room_id=message.room_id, sender=message.sender, ref=ref, duration_ms=duration,
                filename=filename,
            )  # fmt: skip
        except (MediaRefused, ChatRefused, ModelError) as refused:
            await self._notice(message, f"⚠️ {refused}")
            return
        quoted = "\n".join(
            f"> {escape_markdown(line)}" if line.strip() else ">"
            for line in shorten(transcript, TRANSCRIPT_SHOWN).splitlines()
        )
        await self._notice(message, f"🎤 I heard:\n\n{quoted}")
        await self._relay.answer_message(
            message, transcript, sender_name=self._sender_name(message), ledger=self._ledger
        )

    async def speak_answer(self, turn: ChatTurn, answer: str, reply_to: str | None) -> None:
        """With spoken answers on here, the answer also as a voice message (after the text)."""
        try:
            if not await self._media.speak_on(turn.room_id):
                return
            spoken = await off_loop(lambda: markdown_to_plain(answer), len(answer))
            speech = await self._media.speech(room_id=turn.room_id, sender=turn.sender, text=spoken)
            await self._files.send_voice(
                turn.room_id, speech.audio, mimetype=speech.mimetype, seconds=speech.seconds,
                extension=speech.extension, reply_to=reply_to, thread_root=turn.thread_root,
            )  # fmt: skip
        except (ChatRefused, ModelError) as refused:
            log.warning("chat.speech_failed", error=str(refused))
            try:
                await self._sender.send_markdown(
                    turn.room_id, f"⚠️ No voice answer: {refused}", reply_to=reply_to,
                    thread_root=turn.thread_root,
                )  # fmt: skip
            except SendError:
                pass
        except SendError as problem:
            log.error("chat.speech_undelivered", error=str(problem))
