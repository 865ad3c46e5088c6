"""The LLM stub's media endpoints (mixed into LlmStub): ``POST /v1/audio/transcriptions``
(multipart, as the openai SDK sends it), ``POST /v1/audio/speech`` (answers a real WAV file: a
tone as long as the text would take to say) and ``POST /v1/images/generations`` (answers
``b64_json`` of a real PNG made with Pillow). Every request is recorded for assertions, and image
parts in chat requests are decoded and recorded too (``images_seen``: width, height, mimetype).

Defaults describe what the stub received, so a test or the demo sees it in the answer: a
transcript says how long the audio was ("I heard 1.5 seconds of audio"), a chat answer to a
message with images starts "I see an image of 512x384." (see :func:`describe_images`)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import time
import wave
from collections.abc import Callable
from typing import Any

from aiohttp import web
from PIL import Image

SPEECH_FORMATS = ("wav", "pcm")  # what the stub can really make
SAMPLE_RATE = 8_000
WORDS_PER_SECOND = 2.5
MAX_SPEECH_SECONDS = 20.0
MAX_GENERATED_SIDE = 256  # the stub's pictures are small whatever size is asked


def make_wav(seconds: float, *, rate: int = SAMPLE_RATE, tone_hz: float = 440.0) -> bytes:
    """A real mono 16-bit WAV: a sine tone of `seconds`."""
    frames = max(1, int(seconds * rate))
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * tone_hz * i / rate)))
        for i in range(frames)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(samples)
    return out.getvalue()


def wav_seconds(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as audio:
            return audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


def make_png(width: int, height: int, color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A real PNG: a colored rectangle with a lighter band, `width` x `height`."""
    image = Image.new("RGB", (width, height), color)
    band = Image.new("RGB", (width, max(1, height // 4)), (230, 230, 230))
    image.paste(band, (0, height // 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def image_parts(body: dict[str, Any]) -> list[str]:
    """The image URLs (data URLs) of every image part in a chat request's messages."""
    urls = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    urls.append(url)
    return urls


def decode_data_url(url: str) -> dict[str, Any]:
    """Width, height, mimetype and byte size of a data-URL image (what the model would see)."""
    head, _, data = url.partition(",")
    record: dict[str, Any] = {"mimetype": head.removeprefix("data:").split(";")[0]}
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            record |= {"width": image.size[0], "height": image.size[1], "bytes": len(raw)}
    except (binascii.Error, ValueError, OSError):
        record["error"] = "not an image"
    return record


def describe_images(body: dict[str, Any]) -> str:
    """What the default answer says of the last user message's images: "I see an image of WxH."
    (one sentence per image), or nothing."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            seen = [decode_data_url(u) for u in image_parts({"messages": [message]})]
            return "".join(
                f"I see an image of {s['width']}x{s['height']}. " if "width" in s else
                "I see something that is not an image. "
                for s in seen
            )  # fmt: skip
    return ""


class MediaEndpoints:
    """Mixed into LlmStub: call `_init_media()` in __init__ and `_add_media_routes(app)`."""

    api_key: str | None
    counts: Any

    def _init_media(self) -> None:
        #: ``{"model", "filename", "content_type", "bytes", "response_format", "seconds"}`` per
        #: transcription request.
        self.transcriptions: list[dict[str, Any]] = []
        #: The JSON bodies of speech requests.
        self.speech_requests: list[dict[str, Any]] = []
        #: The JSON bodies of image generation requests.
        self.image_requests: list[dict[str, Any]] = []
        #: One record per image part in chat requests (see :func:`decode_data_url`).
        self.images_seen: list[dict[str, Any]] = []
        #: The transcript: ``None`` describes the audio, a string, or callable(record) -> str.
        self.transcript: str | Callable[[dict[str, Any]], str] | None = None
        #: The audio length ``verbose_json`` reports: ``None`` reports a WAV file's length and
        #: leaves ``duration`` out for other formats (as a provider that does not say).
        self.transcription_seconds: float | None = None
        #: Answer ``response_format=verbose_json`` with 400, as gpt-4o-transcribe does.
        self.json_transcription_only = False
        #: Status to answer media requests with instead (e.g. 404: "the provider lacks it").
        self.media_status: int | None = None

    def _add_media_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/images/generations", self._image_generations)

    def _record_image_parts(self, body: dict[str, Any]) -> None:
        self.images_seen.extend(decode_data_url(u) for u in image_parts(body))

    def _media_refused(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("Authorization", "") != (
            f"Bearer {self.api_key}"
        ):
            self.counts["unauthorized"] += 1
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if self.media_status is not None:
            return _error(self.media_status, "Not supported by llm-stub now.", "not_supported")
        return None

    async def _transcriptions(self, request: web.Request) -> web.Response:
        refused = self._media_refused(request)
        if refused is not None:
            return refused
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "Missing file.", "missing_required_parameter")
        data = upload.file.read()
        if self.json_transcription_only and form.get("response_format") == "verbose_json":
            return _error(400, "response_format 'verbose_json' is not compatible.", "unsupported")
        record = {
            "model": form.get("model"), "filename": upload.filename,
            "content_type": upload.content_type, "bytes": len(data),
            "response_format": form.get("response_format") or "json",
            "seconds": wav_seconds(data),
        }  # fmt: skip
        self.transcriptions.append(record)
        self.counts["transcriptions"] += 1
        if callable(self.transcript):
            text = str(self.transcript(record))
        elif self.transcript is not None:
            text = self.transcript
        elif record["seconds"] is not None:
            text = f"I heard {record['seconds']:.1f} seconds of audio"
        else:
            text = f"I heard {len(data)} bytes of audio"
        if record["response_format"] == "text":
            return web.Response(text=text)
        if record["response_format"] == "verbose_json":
            answer: dict[str, Any] = {"task": "transcribe", "language": "english", "text": text}
            seconds = self.transcription_seconds
            if seconds is None:
                seconds = record["seconds"]
            if seconds is not None:
                answer["duration"] = seconds
            return web.json_response(answer)
        return web.json_response({"text": text})

    async def _speech(self, request: web.Request) -> web.Response:
        refused = self._media_refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.speech_requests.append(body)
        self.counts["speech"] += 1
        fmt = body.get("response_format") or "mp3"
        if fmt not in SPEECH_FORMATS:
            return _error(400, f"llm-stub makes only {SPEECH_FORMATS} audio.", "unsupported")
        words = len(str(body.get("input") or "").split())
        seconds = min(MAX_SPEECH_SECONDS, max(0.5, words / WORDS_PER_SECOND))
        wav = make_wav(seconds)
        if fmt == "pcm":
            return web.Response(body=wav[44:], content_type="audio/pcm")
        return web.Response(body=wav, content_type="audio/wav")

    async def _image_generations(self, request: web.Request) -> web.Response:
        refused = self._media_refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.image_requests.append(body)
        self.counts["images"] += 1
        width, height = _size(body.get("size"))
        png = make_png(min(width, MAX_GENERATED_SIDE), min(height, MAX_GENERATED_SIDE))
        return web.json_response({
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(png).decode(), "revised_prompt": body.get("prompt")}],
        })  # fmt: skip


def _size(value: object) -> tuple[int, int]:
    if isinstance(value, str) and "x" in value:
        w, _, h = value.partition("x")
        if w.isdigit() and h.isdigit() and 0 < int(w) <= 4096 and 0 < int(h) <= 4096:
            return int(w), int(h)
    return 1024, 1024


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}  # fmt: skip
    return web.json_response(body, status=status)
