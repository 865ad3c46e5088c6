"""The assistant's media rules on SQLite and PostgreSQL, with the LLM stub over HTTP and a media
source in memory (the Matrix side is tested in test_assistant_media.py): quotas held before
asking, so concurrent requests cannot overspend; images by reference in the turn's message and
leaving with it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import select

from bot.community.assistant_media import (
    AssistantMedia,
    MediaRefused,
    MediaSettings,
    MediaUnavailable,
)
from bot.community.chat import ChatRefused
from bot.config import GptSettings
from bot.llm.openai_media import OpenAICompatibleMedia
from bot.store.chat_media import MediaRef
from bot.store.models import ChatMedia, GptUsage
from tests.harness.llm_stub import LlmStub
from tests.harness.llm_stub_media import make_png, make_wav
from tests.integration.test_chat_domain import ALICE, db, dm, service, stub, turn  # noqa: F401

BASE = MediaSettings.from_config(
    GptSettings(
        vision_models=("stub-model",), image_max_side=64, image_token_cost=50,
        transcription_model="whisper-stub", speech_model="tts-stub", speech_format="wav",
        image_model="img-stub", image_generation_token_cost=300, audio_token_cost_per_second=10,
    )
)  # fmt: skip


class MemorySource:
    """Files by MXC URI, counted as they are fetched."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []

    async def fetch(self, ref: MediaRef, *, max_bytes: int) -> bytes:
        self.fetched.append(ref.mxc)
        data = self.files.get(ref.mxc)
        if data is None:
            raise MediaUnavailable("it is gone")
        if len(data) > max_bytes:
            raise MediaUnavailable("it is too large")
        return data


def media_for(db, stub: LlmStub, **changes) -> tuple[AssistantMedia, MemorySource]:  # noqa: F811
    chat = service(db, stub)
    port = OpenAICompatibleMedia(
        base_url=stub.base_url, api_key="sk-test", timeout=5.0, max_retries=0
    )
    source = MemorySource()
    media = AssistantMedia(db, dataclasses.replace(BASE, **changes), port, chat, source=source)
    chat.media = media
    return media, source


async def test_concurrent_pictures_cannot_overspend_the_quota(db, stub):  # noqa: F811
    media, _ = media_for(db, stub)  # quota 1000, a picture 300: three fit, not four
    stub.latency = 0.2  # all asked while the others are still under way

    async def one(i: int) -> bool:
        try:
            await media.generate_image(room_id="!dm:x", sender=ALICE, prompt=f"cat {i}")
            return True
        except ChatRefused:
            return False

    made = await asyncio.gather(*(one(i) for i in range(8)))
    assert sum(made) == 3 and len(stub.image_requests) == 3
    async with db.transaction() as session:
        usage = await session.scalar(select(GptUsage).where(GptUsage.mxid == ALICE))
    assert (usage.prompt_tokens, usage.reserved_tokens, usage.requests) == (900, 0, 3)


async def test_a_failed_request_gives_its_reservation_back(db, stub):  # noqa: F811
    media, source = media_for(db, stub)
    stub.media_status = 500
    with pytest.raises(Exception, match="failed"):
        await media.generate_image(room_id="!dm:x", sender=ALICE, prompt="x")
    source.files["mxc://x/voice"] = make_wav(3.0)
    with pytest.raises(Exception, match="failed"):
        await media.transcribe(
            room_id="!dm:x", sender=ALICE, ref=MediaRef("mxc://x/voice", "audio/wav"),
            duration_ms=3000, filename="v.wav",
        )  # fmt: skip
    async with db.transaction() as session:
        usage = await session.scalar(select(GptUsage).where(GptUsage.mxid == ALICE))
    assert (usage.prompt_tokens, usage.reserved_tokens, usage.requests) == (0, 0, 0)


async def test_voice_is_counted_by_the_second_and_long_ones_refused(db, stub):  # noqa: F811
    media, source = media_for(db, stub, audio_max_seconds=10)
    source.files["mxc://x/v"] = make_wav(2.5)
    ref = MediaRef("mxc://x/v", "audio/wav")
    text = await media.transcribe(
        room_id="!dm:x", sender=ALICE, ref=ref, duration_ms=None, filename="v.wav"
    )  # undeclared: 10 s held, 2.5 s measured and counted
    assert text == "I heard 2.5 seconds of audio"
    with pytest.raises(MediaRefused, match="too long"):
        await media.transcribe(
            room_id="!dm:x", sender=ALICE, ref=ref, duration_ms=60_000, filename="v.wav"
        )
    async with db.transaction() as session:
        usage = await session.scalar(select(GptUsage).where(GptUsage.mxid == ALICE))
    assert (usage.prompt_tokens, usage.reserved_tokens, usage.requests) == (25, 0, 1)


async def test_images_ride_with_their_turn_and_leave_with_it(db, stub):  # noqa: F811
    media, source = media_for(db, stub)
    chat = media._chat
    source.files["mxc://x/a"] = make_png(640, 480)
    accepted = await media.accept_image(
        room_id="!dm:x", thread_root=None, sender=ALICE, event_id="$img",
        ref=MediaRef("mxc://x/a", "image/png", size=100),
    )  # fmt: skip
    assert (accepted.width, accepted.height) == (640, 480)
    assert (
        await turn(chat, dm("what is it?", "$q1")) == "I see an image of 64x48. Echo: what is it?"
    )
    async with db.transaction() as session:
        [row] = list(await session.scalars(select(ChatMedia)))
    assert row.message_id is not None and row.mxc == "mxc://x/a"
    history = await chat.history("!dm:x", None, ALICE)
    assert history[0].tokens >= 50  # the image's cost is part of its message's count

    # The next turn shows it again. Fetched twice in all: checked when it came, fetched again
    # for the first prompt; the shrunk copy is then kept in memory (a few, LRU) for later turns.
    await turn(chat, dm("more?", "$q2"))
    assert len(stub.images_seen) == 2 and source.fetched.count("mxc://x/a") == 2
    # The member redacts their question: the image leaves with it.
    assert await chat.forget_event("$q1")
    async with db.transaction() as session:
        assert list(await session.scalars(select(ChatMedia))) == []


async def test_vision_off_refuses_and_a_room_can_switch_it(db, stub):  # noqa: F811
    media, source = media_for(db, stub, vision_models=frozenset())
    source.files["mxc://x/a"] = make_png(10, 10)
    ref = MediaRef("mxc://x/a", "image/png")
    with pytest.raises(MediaRefused, match="cannot look at images"):
        await media.accept_image(
            room_id="!dm:x", thread_root=None, sender=ALICE, event_id="$i", ref=ref
        )
    await media.set_room_switch("!dm:x", "@mod:x", "vision", True)
    await media.accept_image(
        room_id="!dm:x", thread_root=None, sender=ALICE, event_id="$i", ref=ref
    )
    assert source.fetched == ["mxc://x/a"]  # refused before any download while off


async def test_a_declared_duration_decides_no_money(db, stub):  # noqa: F811
    """A member declares 1 ms on long recordings: the file's own length is held and charged,
    too long ones are refused before the model is asked, and what cannot be measured holds the
    longest accepted and is charged by the provider's figure or the file's size."""
    from tests.harness.ogg_audio import make_ogg_opus

    media, source = media_for(db, stub, audio_max_seconds=10)
    files = {
        "mxc://x/opus6": make_ogg_opus(6.0, granule=48),  # even its last page lies
        "mxc://x/wav6": make_wav(6.0),
        "mxc://x/opus60": make_ogg_opus(60.0),
        "mxc://x/mp3": b"ID3" + bytes(15_997),  # no length in the file: 16,000 bytes = 4 s
    }
    source.files.update(files)

    async def hear(mxc: str, mimetype: str) -> str:
        return await media.transcribe(
            room_id="!dm:x", sender=ALICE, ref=MediaRef(mxc, mimetype), duration_ms=1,
            filename="voice.ogg",
        )  # fmt: skip

    async def spent() -> tuple[int, int, int]:
        async with db.transaction() as session:
            usage = await session.scalar(select(GptUsage).where(GptUsage.mxid == ALICE))
        return (usage.prompt_tokens, usage.reserved_tokens, usage.requests)

    await hear("mxc://x/opus6", "audio/ogg")
    assert await spent() == (60, 0, 1)  # 6 s at 10 tokens, not 1 ms
    await hear("mxc://x/wav6", "audio/wav")
    assert await spent() == (120, 0, 2)
    with pytest.raises(MediaRefused, match="too long"):
        await hear("mxc://x/opus60", "audio/ogg")
    assert len(stub.transcriptions) == 2 and await spent() == (120, 0, 2)
    await hear("mxc://x/mp3", "audio/mpeg")  # the stub tells no duration: the size decides
    assert await spent() == (160, 0, 3)
    stub.transcription_seconds = 8.0  # the provider says how long it was
    await hear("mxc://x/mp3", "audio/mpeg")
    assert await spent() == (240, 0, 4)
    stub.transcription_seconds = 45.0  # too long, known only once heard: charged, refused
    with pytest.raises(MediaRefused, match="too long"):
        await hear("mxc://x/mp3", "audio/mpeg")
    assert await spent() == (340, 0, 5)  # at most the 10 s held


async def test_a_redacted_image_is_forgotten_pending_or_attached(db, stub):  # noqa: F811
    media, source = media_for(db, stub)
    chat = media._chat
    source.files["mxc://x/a"] = make_png(640, 480)
    source.files["mxc://x/b"] = make_png(320, 240)

    async def accept(mxc: str, event_id: str) -> None:
        await media.accept_image(
            room_id="!dm:x", thread_root=None, sender=ALICE, event_id=event_id,
            ref=MediaRef(mxc, "image/png"),
        )  # fmt: skip

    async def stored() -> list[str]:
        async with db.transaction() as session:
            return [r.event_id for r in await session.scalars(select(ChatMedia))]

    # Pending: redacted before any question, it never reaches the model.
    await accept("mxc://x/a", "$img1")
    assert await chat.forget_event("$img1")
    assert await stored() == []
    assert await turn(chat, dm("what is it?", "$q1")) == "Echo: what is it?"
    assert stub.images_seen == []

    # Attached to a turn: redacting the image (not the question) takes it out of the history
    # and out of the shrunk copies kept in memory; the question stays.
    await accept("mxc://x/b", "$img2")
    await turn(chat, dm("and this?", "$q2"))
    assert len(stub.images_seen) == 1 and await stored() == ["$img2"]
    assert await chat.forget_event("$img2")
    assert await stored() == [] and not any(k[0] == "mxc://x/b" for k in media._prepared)
    await turn(chat, dm("still there?", "$q3"))
    assert len(stub.images_seen) == 1
    assert [m.content for m in await chat.history("!dm:x", None, ALICE)][::2] == [
        "what is it?", "and this?", "still there?",
    ]  # fmt: skip

    # Redacted while it was still being checked: not kept.
    media._redacted["$img3"] = True
    with pytest.raises(MediaRefused):
        await accept("mxc://x/a", "$img3")
    assert await stored() == []
