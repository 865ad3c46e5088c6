"""The assistant's media through the same OpenAI-compatible endpoint, with the openai SDK:
transcription (`/v1/audio/transcriptions`), speech (`/v1/audio/speech`) and image generation
(`/v1/images/generations`). langchain covers none of them. The SDK is imported in a worker
thread on first use, as for chat. A provider that lacks one answers 404 (or 400/501): the member
is told it is not offered, never shown a traceback."""

from __future__ import annotations

import asyncio
import base64
import math
from typing import TYPE_CHECKING, Any

import structlog

from bot.community.assistant_media import MediaModel, Transcript
from bot.community.chat import ModelError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = structlog.get_logger(__name__)

# A generated image larger than this is refused (base64 of a 4K PNG is ~ 30 MiB).
MAX_GENERATED_BYTES = 32 * 1024 * 1024
MAX_SPEECH_BYTES = 32 * 1024 * 1024


class OpenAICompatibleMedia(MediaModel):
    def __init__(
        self, *, base_url: str, api_key: str | None, timeout: float, max_retries: int
    ) -> None:
        self._options = {
            "base_url": base_url,
            "api_key": api_key or "not-needed",
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client: AsyncOpenAI | None = None
        self._plain_transcription: set[str] = set()  # models that refused verbose_json

    async def _openai(self) -> AsyncOpenAI:
        if self._client is None:

            def make() -> AsyncOpenAI:
                from openai import AsyncOpenAI

                return AsyncOpenAI(**self._options)  # type: ignore[arg-type]

            self._client = await asyncio.to_thread(make)
        return self._client

    async def transcribe(
        self, audio: bytes, *, filename: str, mimetype: str, model: str
    ) -> Transcript:
        """`verbose_json` carries the audio's length as the provider measured it; a model that
        offers only `json` (gpt-4o-transcribe, some local servers) refuses it with 400 and is
        asked again plainly, once per model for the process's life."""
        client = await self._openai()
        verbose = model not in self._plain_transcription
        try:
            try:
                result = await client.audio.transcriptions.create(
                    model=model, file=(filename, audio, mimetype),
                    response_format="verbose_json" if verbose else "json",
                )  # fmt: skip
            except Exception as problem:
                import openai

                if not (verbose and isinstance(problem, openai.BadRequestError)):
                    raise
                self._plain_transcription.add(model)
                result = await client.audio.transcriptions.create(
                    model=model, file=(filename, audio, mimetype), response_format="json"
                )
        except Exception as problem:
            raise _explain(problem, model, "transcription of voice messages") from None
        text = getattr(result, "text", result if isinstance(result, str) else "")
        duration = getattr(result, "duration", None)
        seconds = (
            float(duration)
            if isinstance(duration, int | float) and not isinstance(duration, bool)
            and math.isfinite(duration) and duration >= 0
            else None
        )  # fmt: skip
        return Transcript(text if isinstance(text, str) else "", seconds)

    async def speak(self, text: str, *, model: str, voice: str, audio_format: str) -> bytes:
        client = await self._openai()
        try:
            response = await client.audio.speech.create(
                model=model,
                voice=voice,
                input=text,
                response_format=audio_format,  # type: ignore[arg-type]
            )
            data = response.content
        except Exception as problem:
            raise _explain(problem, model, "spoken answers") from None
        if not data or len(data) > MAX_SPEECH_BYTES:
            raise ModelError("The assistant's service sent no usable audio.")
        return data

    async def generate_image(self, prompt: str, *, model: str, size: str) -> bytes:
        client = await self._openai()
        try:
            result = await client.images.generate(
                model=model, prompt=prompt, size=size, n=1,  # type: ignore[arg-type]
                **_b64_option(model),
            )  # fmt: skip
        except Exception as problem:
            raise _explain(problem, model, "pictures") from None
        data = result.data[0] if result.data else None
        encoded = getattr(data, "b64_json", None)
        if not isinstance(encoded, str) or len(encoded) > MAX_GENERATED_BYTES * 4 // 3 + 4:
            raise ModelError("The assistant's service sent no usable picture.")
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ModelError("The assistant's service sent no usable picture.") from None


def _b64_option(model: str) -> dict[str, Any]:
    # gpt-image models always answer with base64 and refuse the parameter; DALL·E, LocalAI and
    # others need it asked for (they answer with a URL by default, which this bot never fetches).
    return {} if model.startswith("gpt-image") else {"response_format": "b64_json"}


def _explain(problem: Exception, model: str, feature: str) -> ModelError:
    import httpx
    import openai

    status = getattr(problem, "status_code", None)
    log.warning("gpt.media_failed", model=model, error=type(problem).__name__, status=status)
    if isinstance(problem, openai.NotFoundError) or status in (404, 405, 501):
        return ModelError(
            f"The assistant's service does not offer {feature} with the model {model}. "
            "The operator can change or switch off this feature in the configuration."
        )
    if isinstance(problem, openai.RateLimitError):
        return ModelError("The assistant is overloaded right now. Please try again in a minute.")
    if isinstance(problem, openai.APITimeoutError):
        return ModelError("The assistant took too long to answer. Please try again.")
    if isinstance(problem, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelError(
            "The assistant is not set up correctly; the operators can see why in the log."
        )
    if isinstance(problem, openai.BadRequestError):
        return ModelError(f"The assistant's service refused this request for {feature}.")
    if isinstance(problem, openai.APIStatusError):
        return ModelError(f"The assistant's service failed (HTTP {status}). Please try again.")
    if isinstance(problem, openai.APIConnectionError | httpx.HTTPError):
        return ModelError(
            "The assistant's service cannot be reached right now. Please try again later."
        )
    log.exception("gpt.media_unexpected_error", model=model)
    return ModelError("Something went wrong while asking the assistant. It has been logged.")
