"""The assistant beyond text: images members send (vision), voice messages in (transcription)
and out (speech), and pictures on request (image generation). Domain only: the model and the
media repository are handed in through small interfaces (bot/llm, bot/matrix implement them).

Every feature is off until configured ([gpt] vision_models, transcription_model, speech_model,
image_model): a member asking for one that is off is told so, in words, never with a traceback.
Everything counts against the member's daily quota, held before the model is asked and settled
after, in the same single-statement reservations as text (bot/store/chat_usage.py), so
concurrent requests cannot overspend it."""

from __future__ import annotations

import asyncio
import io
import math
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from bot.community.audio_length import measure
from bot.community.chat import (
    ChatRefused,
    ChatService,
    ModelError,
    PromptMessage,
    describe_wait,
    until_reset,
)
from bot.config import GptSettings
from bot.lru import LRUDict
from bot.store.chat_media import ChatMediaStore, MediaRef, StoredMedia
from bot.store.chat_usage import DayUsage, Held, UsageStore
from bot.store.database import Database
from bot.store.models import utcnow

if TYPE_CHECKING:
    from bot.community.images import ModelImage
    from bot.store.chat import StoredMessage

log = structlog.get_logger(__name__)

# An image waits this long for the member's next message; then it is forgotten.
PENDING_FOR = timedelta(hours=1)
PENDING_KEPT = 4  # images waiting per member and conversation, at most
# Audio whose length cannot be read from the file nor is told by the provider is charged as if
# it were this many bytes a second (32 kbit/s: low for voice codecs, so never less than real).
FALLBACK_BYTES_PER_SECOND = 4_000
# Speech is estimated before it exists: about 150 words a minute.
WORDS_PER_SECOND = 2.5
SPEECH_MIMETYPES = {
    "opus": "audio/ogg", "mp3": "audio/mpeg", "aac": "audio/aac", "flac": "audio/flac",
    "wav": "audio/wav",
}  # fmt: skip


class MediaRefused(Exception):
    """The member's image or voice message cannot be used; `str()` says why, kindly."""


class MediaWithdrawn(MediaRefused):
    """The member redacted the image while it was being checked: nothing to say."""


class MediaUnavailable(Exception):
    """The media repository did not give the file (gone, too large, too slow)."""


class MediaModel(Protocol):
    """What the OpenAI-compatible endpoint offers beyond chat."""

    async def transcribe(
        self, audio: bytes, *, filename: str, mimetype: str, model: str
    ) -> Transcript: ...

    async def speak(self, text: str, *, model: str, voice: str, audio_format: str) -> bytes: ...

    async def generate_image(self, prompt: str, *, model: str, size: str) -> bytes: ...


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float | None = None  # the audio's length as the provider measured it, if it says


class MediaSource(Protocol):
    """Fetches a member's file from the media repository (decrypted when it was encrypted), at
    most `max_bytes` of it. Raises MediaUnavailable."""

    async def fetch(self, ref: MediaRef, *, max_bytes: int) -> bytes: ...


@dataclass(frozen=True)
class MediaSettings:
    vision_models: frozenset[str]
    image_max_side: int
    image_token_cost: int
    media_max_bytes: int
    image_max_pixels: int
    transcription_model: str
    audio_max_seconds: int
    audio_token_cost_per_second: int
    speak_replies: bool
    speech_model: str
    speech_voice: str
    speech_format: str
    speech_max_chars: int
    image_model: str
    image_size: str
    image_generation_token_cost: int

    @classmethod
    def from_config(cls, gpt: GptSettings) -> MediaSettings:
        names = cls.__dataclass_fields__
        values = {name: getattr(gpt, name) for name in names}
        values["vision_models"] = frozenset(gpt.vision_models)
        return cls(**values)

    @property
    def speech_mimetype(self) -> str:
        return SPEECH_MIMETYPES[self.speech_format]


@dataclass(frozen=True)
class AcceptedImage:
    width: int
    height: int


@dataclass(frozen=True)
class Speech:
    audio: bytes
    mimetype: str
    seconds: float
    extension: str


@dataclass(frozen=True)
class GeneratedImage:
    """A picture the model made, for a command's reply to carry (`Reply.extra["image"]`)."""

    data: bytes
    width: int | None
    height: int | None
    prompt: str


@dataclass(frozen=True)
class TurnImages:
    """What a turn's prompt gains: images on its history messages and on the new one."""

    history: list[PromptMessage]
    current: PromptMessage
    media_ids: tuple[int, ...]  # pending images the turn takes


def wav_seconds(data: bytes) -> float | None:
    """The length of a WAV file, or None for other formats (or a damaged file)."""
    try:
        with wave.open(io.BytesIO(data)) as audio:
            rate = audio.getframerate()
            return audio.getnframes() / rate if rate else None
    except (wave.Error, EOFError, ValueError):
        return None


def speech_seconds(text: str) -> float:
    return max(1.0, len(text.split()) / WORDS_PER_SECOND)


def audio_cost(seconds: float, per_second: int) -> int:
    return math.ceil(max(0.0, seconds) * per_second)


def declared_seconds(duration_ms: object, limit: int) -> float | None:
    """A voice message's declared length (`info.duration`, ms), when it is a sane number."""
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | float):
        return None
    if not math.isfinite(duration_ms) or duration_ms < 0:
        return None
    return min(float(duration_ms) / 1000, float(limit) + 1)


def _images():  # type: ignore[no-untyped-def]
    """Pillow is loaded when the first image comes, not at start-up (bot/community/images.py)."""
    from bot.community import images

    return images


class AssistantMedia:
    def __init__(
        self,
        db: Database,
        settings: MediaSettings,
        model: MediaModel,
        chat: ChatService,
        *,
        source: MediaSource | None = None,
        clock: Callable[[], datetime] = utcnow,
        store: ChatMediaStore | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        self.settings = settings
        self._model = model
        self._chat = chat
        self.source = source  # set by bot/app once the Matrix client exists
        self._clock = clock
        self._store = store or ChatMediaStore(db)
        self._usage = usage or UsageStore(db)
        # Images made small for the model, by MXC URI: a conversation's images are not fetched
        # and shrunk again for every turn (bounded: a few MiB at most).
        self._prepared: LRUDict[tuple[str, int], ModelImage] = LRUDict(16)
        # Images redacted lately: one still being checked when its redaction came is not kept.
        self._redacted: LRUDict[str, bool] = LRUDict(1024)

    # -- switches -----------------------------------------------------------------------------

    async def vision_on(self, room_id: str, model: str) -> bool:
        room = await self._store.room_overrides(room_id)
        if room.vision is not None:
            return room.vision
        return model in self.settings.vision_models

    async def speak_on(self, room_id: str) -> bool:
        if not self.settings.speech_model:
            return False
        room = await self._store.room_overrides(room_id)
        return self.settings.speak_replies if room.speak is None else room.speak

    async def set_room_switch(self, room_id: str, actor: str, name: str, on: bool | None) -> None:
        await self._store.set_room_switch(room_id, actor, name, on)

    async def room_switches(self, room_id: str) -> tuple[bool | None, bool | None]:
        room = await self._store.room_overrides(room_id)
        return room.vision, room.speak

    # -- quota --------------------------------------------------------------------------------

    def _today(self) -> date:
        return self._clock().date()

    async def _hold(self, sender: str, room_id: str, cost: int) -> Held:
        """Check access and reserve `cost` tokens before the model is asked. Raises
        ChatRefused (access, or the quota would be passed)."""
        _, caller = await self._chat.check_access(sender, room_id)
        quota = (
            caller.quota_override
            if caller.quota_override is not None
            else self._chat.settings.daily_quota.get(caller.role, 0)
        )

        def grant(taken: int) -> int | None:
            return None if quota and taken + cost > quota else 0

        result = await self._usage.hold(sender, self._today(), cost, grant)
        if isinstance(result, Held):
            return result
        raise ChatRefused(self._quota_refusal(result, quota, cost))

    def _quota_refusal(self, today: DayUsage, quota: int, cost: int) -> str:
        if today.reserved and today.used + cost <= quota:
            return (
                "Your other requests are still being answered, and together they may use up "
                "today's quota. Please try again when they are done."
            )
        wait = describe_wait(until_reset(self._clock()))
        left = max(0, quota - today.used)
        return (
            f"This needs {cost:,} tokens of your daily quota and {left:,} are left. "
            f"The quota resets at 00:00 UTC, in {wait}."
        )

    async def _settle(self, held: Held, spent: int | None) -> None:
        await self._usage.settle(held, prompt=spent or 0, completion=0, counted=spent is not None)

    # -- images in ----------------------------------------------------------------------------

    async def accept_image(
        self,
        *,
        room_id: str,
        thread_root: str | None,
        sender: str,
        event_id: str,
        ref: MediaRef,
    ) -> AcceptedImage:
        """Check an image a member sent and keep it (by reference) for their next turn.
        Raises MediaRefused or ChatRefused."""
        room, _ = await self._chat.check_access(sender, room_id)
        if not await self.vision_on(room_id, room.model):
            raise MediaRefused(
                f"The assistant's model here ({room.model}) cannot look at images. The operator "
                "can list it in `[gpt] vision_models`, or a moderator can send `!gpt vision on` "
                "if it can."
            )
        limit = self.settings.media_max_bytes
        if ref.size is not None and ref.size > limit:
            raise MediaRefused(self._too_large(ref.size))
        data = await self._fetch(ref)
        images = await asyncio.to_thread(_images)
        try:
            facts = await asyncio.to_thread(
                images.inspect_image, data, max_pixels=self.settings.image_max_pixels
            )
        except images.ImageRejected as problem:
            raise MediaRefused(f"I cannot use this image: {problem}.") from None
        stored = replace(ref, width=facts.width, height=facts.height, size=len(data))
        if event_id in self._redacted:
            raise MediaWithdrawn("the image was redacted")
        await self._store.add_pending(
            room_id, thread_root, sender, stored, event_id=event_id, keep_at_most=PENDING_KEPT
        )
        if event_id in self._redacted:  # redacted while it was being stored
            await self.forget_image(event_id)
            raise MediaWithdrawn("the image was redacted")
        log.info("chat.image_received", width=facts.width, height=facts.height, bytes=len(data))
        return AcceptedImage(facts.width, facts.height)

    def _too_large(self, size: int) -> str:
        mib = self.settings.media_max_bytes / (1024 * 1024)
        return f"This file is too large ({size / (1024 * 1024):.1f} MiB; at most {mib:g} MiB)."

    async def _fetch(self, ref: MediaRef) -> bytes:
        if self.source is None:
            raise MediaRefused("I cannot read media files right now.")
        try:
            return await self.source.fetch(ref, max_bytes=self.settings.media_max_bytes)
        except MediaUnavailable as problem:
            raise MediaRefused(f"I could not fetch the file: {problem}.") from None

    async def _model_image(self, stored: StoredMedia) -> ModelImage | None:
        """The image shrunk for the model (fetched again from the media repository), or None
        when it is gone or unreadable now."""
        key = (stored.ref.mxc, self.settings.image_max_side)
        if key in self._prepared:
            return self._prepared[key]
        images = await asyncio.to_thread(_images)
        try:
            data = await self._fetch(stored.ref)
            image = await asyncio.to_thread(
                images.for_model, data, max_side=self.settings.image_max_side,
                max_pixels=self.settings.image_max_pixels,
            )  # fmt: skip
        except (MediaRefused, images.ImageRejected) as problem:
            log.warning("chat.image_unavailable", error=str(problem))
            return None
        self._prepared[key] = image
        return image

    async def pending_for(
        self, room_id: str, thread_root: str | None, member: str, model: str
    ) -> list[StoredMedia]:
        """Images waiting for this member's next turn here (none while vision is off)."""
        if not await self.vision_on(room_id, model):
            return []
        return await self._store.pending(room_id, thread_root, member, self._clock() - PENDING_FOR)

    def image_tokens(self, count: int) -> int:
        return count * self.settings.image_token_cost

    async def with_images(
        self,
        window: Sequence[StoredMessage],
        history: list[PromptMessage],
        current: PromptMessage,
        pending: list[StoredMedia],
        *,
        room_id: str,
        model: str,
    ) -> TurnImages:
        """Give the prompt its images: those stored with the history messages in the window
        (their token cost is already in those messages' counts, so the budget dropped old ones
        with their text) and the pending ones on the new message."""
        if not pending and not await self.vision_on(room_id, model):
            return TurnImages(history, current, ())
        by_message: dict[int, list[StoredMedia]] = {}
        for media in await self._store.of_messages([m.id for m in window]):
            if media.message_id is not None:
                by_message.setdefault(media.message_id, []).append(media)
        with_images = []
        for stored, message in zip(window, history, strict=True):
            attached = [await self._model_image(m) for m in by_message.get(stored.id, [])]
            urls = tuple(i.data_url for i in attached if i is not None)
            with_images.append(replace(message, images=urls) if urls else message)
        now = [await self._model_image(m) for m in pending]
        urls = tuple(i.data_url for i in now if i is not None)
        if urls:
            current = replace(current, images=urls)
        return TurnImages(with_images, current, tuple(m.id for m in pending))

    async def forget_image(self, event_id: str) -> bool:
        """A member redacted an image: its row (pending or attached, with the key of an
        encrypted one) and its shrunk copy in memory go; one still being checked is dropped
        when its check ends."""
        self._redacted[event_id] = True
        forgotten = set(await self._store.forget_event(event_id))
        for key in [k for k in self._prepared if k[0] in forgotten]:
            del self._prepared[key]
        return bool(forgotten)

    async def drop_stale_pending(self) -> int:
        return await self._store.drop_pending_before(self._clock() - PENDING_FOR)

    # -- voice in -----------------------------------------------------------------------------

    async def transcribe(
        self,
        *,
        room_id: str,
        sender: str,
        ref: MediaRef,
        duration_ms: object,
        filename: str,
    ) -> str:
        """What a voice message says. Its length counts against the quota, and the member's
        declared `info.duration` decides nothing of it (it only refuses early, when it already
        says too long): the file's own length is measured (audio_length.py) and held before
        the model is asked; when it cannot be, the longest accepted is held and the provider's
        figure (or the file's size) is charged. Raises MediaRefused, ChatRefused or
        ModelError."""
        s = self.settings
        if not s.transcription_model:
            raise MediaRefused(
                "I cannot listen to voice messages here: the operator has not set up "
                "transcription (`[gpt] transcription_model`). Please type your message."
            )
        declared = declared_seconds(duration_ms, s.audio_max_seconds)
        if declared is not None and declared > s.audio_max_seconds:
            raise MediaRefused(self._too_long())
        if ref.size is not None and ref.size > s.media_max_bytes:
            raise MediaRefused(self._too_large(ref.size))
        await self._chat.check_access(sender, room_id)  # before any download
        data = await self._fetch(ref)
        longest = float(s.audio_max_seconds)
        found = await asyncio.to_thread(measure, data, enough=longest + 1)
        if found is not None and found.seconds > longest + 1:
            raise MediaRefused(self._too_long())  # before the model is asked: nothing spent
        exact = found.seconds if found is not None and found.exact else None
        per_second = s.audio_token_cost_per_second
        held = await self._hold(
            sender, room_id, audio_cost(longest if exact is None else exact, per_second)
        )
        spent: int | None = None
        try:
            heard = await self._model.transcribe(
                data, filename=filename, mimetype=ref.mimetype or "application/octet-stream",
                model=s.transcription_model,
            )  # fmt: skip
            figures = [x for x in (found and found.seconds, heard.seconds) if x is not None]
            length = max(figures) if figures else len(data) / FALLBACK_BYTES_PER_SECOND
            spent = min(held.prompt, audio_cost(length, per_second))
        finally:
            await self._settle(held, spent)
        if heard.seconds is not None and heard.seconds > longest + 1:
            raise MediaRefused(self._too_long())  # known only now: charged, not answered
        text = heard.text.strip()
        if not text:
            raise MediaRefused("I could not make out any words in this voice message.")
        log.info("chat.voice_transcribed", seconds=round(length, 1), tokens=spent)
        return text

    def _too_long(self) -> str:
        return (
            f"This voice message is too long: I listen to at most "
            f"{self.settings.audio_max_seconds} s."
        )

    # -- voice out ----------------------------------------------------------------------------

    async def speech(self, *, room_id: str, sender: str, text: str) -> Speech:
        """The answer spoken. Raises ChatRefused (quota) or ModelError."""
        s = self.settings
        spoken = text[: s.speech_max_chars]
        estimate = min(speech_seconds(spoken), float(s.audio_max_seconds))
        held = await self._hold(
            sender, room_id, audio_cost(estimate, s.audio_token_cost_per_second)
        )
        spent: int | None = None
        try:
            audio = await self._model.speak(
                spoken, model=s.speech_model, voice=s.speech_voice, audio_format=s.speech_format
            )
            seconds = wav_seconds(audio) or estimate
            spent = min(held.prompt, audio_cost(seconds, s.audio_token_cost_per_second))
        finally:
            await self._settle(held, spent)
        extension = "ogg" if s.speech_format == "opus" else s.speech_format
        return Speech(audio, s.speech_mimetype, seconds, extension)

    # -- images out ---------------------------------------------------------------------------

    async def generate_image(self, *, room_id: str, sender: str, prompt: str) -> GeneratedImage:
        """A picture for `prompt`; its configured cost is held first. Raises MediaRefused,
        ChatRefused or ModelError."""
        s = self.settings
        if not s.image_model:
            raise MediaRefused(
                "I cannot make pictures here: the operator has not set up image generation "
                "(`[gpt] image_model`)."
            )
        held = await self._hold(sender, room_id, s.image_generation_token_cost)
        spent: int | None = None
        try:
            data = await self._model.generate_image(prompt, model=s.image_model, size=s.image_size)
            spent = s.image_generation_token_cost
        finally:
            await self._settle(held, spent)
        facts = await asyncio.to_thread(lambda: _images().png_facts(data))
        if facts is None:
            raise ModelError("The assistant's service sent no usable picture.")
        log.info("chat.image_generated", bytes=len(data), tokens=spent)
        return GeneratedImage(data, facts.width, facts.height, prompt)


__all__ = [
    "AcceptedImage", "AssistantMedia", "GeneratedImage", "MediaModel", "MediaRefused", "MediaSettings",
    "MediaSource", "MediaUnavailable", "MediaWithdrawn", "ModelError", "Speech", "Transcript", "TurnImages",
]  # fmt: skip
