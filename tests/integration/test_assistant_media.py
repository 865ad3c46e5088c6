"""Images and voice with the assistant as members use them: real Synapse (media uploaded and
downloaded through its media repository, encrypted attachments in encrypted DMs), the real bot,
and the project's LLM stub over HTTP for chat, transcription, speech and image generation."""

from __future__ import annotations

import asyncio
import io
import math
import os
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from bot.community.assistant_media import wav_seconds
from bot.store.database import Database
from bot.store.models import ChatMedia, GptUsage
from tests.harness.bot import running_bot
from tests.harness.linking import link_url
from tests.harness.llm_stub import LlmStub
from tests.harness.llm_stub_media import make_png, make_wav
from tests.harness.loop_lag import LoopLag
from tests.harness.matrix_media import download, send_image, send_voice, upload
from tests.harness.matrix_user import TestUser
from tests.harness.ogg_audio import make_ogg_opus
from tests.integration.test_chat_matrix import gpt as chat_gpt
from tests.integration.test_chat_matrix import linked_user

pytestmark = pytest.mark.synapse

PLAIN_AND_ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "e2ee"])


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0) as server:
        yield server


def gpt(stub: LlmStub, **overrides: Any) -> dict[str, Any]:
    """Answers in one message (no placeholder edited as it streams): what is asserted is what
    the model saw and answered, not the streaming."""
    return chat_gpt(stub, stream=False, **overrides)


async def dm(user: TestUser, bot_id: str, *, encrypted: bool) -> str:
    room = await user.create_room(invite=[bot_id], is_direct=True, encrypted=encrypted)
    await user.wait_for_membership(room, bot_id, "join", timeout=15)
    return room


async def reply_to(user: TestUser, room: str, bot_id: str, after: str, **kw: Any) -> dict:
    return await user.wait_for_message(room, sender=bot_id, after_event_id=after, timeout=30, **kw)


async def until(read: Any, done: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done(found := await read()):
        assert asyncio.get_running_loop().time() < deadline, f"still {found!r}"
        await asyncio.sleep(0.1)
    return found


async def rows(url: str, model: Any) -> list[Any]:
    db = Database(url)
    try:
        async with db.transaction() as session:
            return list(await session.scalars(select(model)))
    finally:
        await db.close()


@PLAIN_AND_ENCRYPTED
async def test_an_image_reaches_the_model_downscaled_and_is_kept_by_reference(
    synapse, stub, tmp_path, encrypted
):
    extra = gpt(stub, vision_models=["stub-model"], image_max_side=256, image_token_cost=100)
    async with running_bot(synapse, tmp_path, encryption=encrypted, extra=extra) as bot:
        async with await linked_user(synapse, bot, "iris") as iris:
            room = await dm(iris, bot.user_id, encrypted=encrypted)
            sent = await send_image(
                iris, room, make_png(1000, 600), encrypt=encrypted, width=1000, height=600
            )
            ack = await reply_to(iris, room, bot.user_id, sent)
            assert ack["content"]["body"] == (
                "🖼️ I have your image (1000×600). Ask me about it in your next message."
            )
            assert stub.counts["requests"] == 0, "an image alone is no question"
            question = await iris.send_text(room, "What is this?")
            answer = await reply_to(iris, room, bot.user_id, question)
            assert answer["content"]["body"] == "I see an image of 256x154. Echo: What is this?"
            if encrypted:
                assert iris.is_decrypted(answer["event_id"])
            assert stub.images_seen[-1]["width"] == 256 and stub.images_seen[-1]["height"] == 154
            user_turn = stub.last_messages()[-1]
            assert user_turn["content"][0] == {"type": "text", "text": "What is this?"}

            # Stored by reference (and with the key for an encrypted attachment), never bytes.
            media = await until(
                lambda: rows(bot.config.database.url, ChatMedia),
                lambda found: len(found) == 1 and found[0].message_id is not None,
            )  # the turn is stored just after its answer went out
            media = media[0]
            assert media.mxc.startswith("mxc://")
            assert (media.width, media.height) == (1000, 600)
            assert (media.encryption is not None) == encrypted
            if encrypted:
                assert set(media.encryption) == {"key", "iv", "hashes", "v"}

            # The next turn fetches it again from the media repository for the history.
            follow = await iris.send_text(room, "And the colour?")
            again = await reply_to(iris, room, bot.user_id, follow)
            assert again["content"]["body"] == "Echo: And the colour?"
            history = stub.last_messages()
            assert isinstance(history[1]["content"], list), "the earlier image left the prompt"
            assert len(stub.images_seen) == 2


@PLAIN_AND_ENCRYPTED
async def test_a_redacted_image_never_reaches_the_model(synapse, stub, tmp_path, encrypted):
    extra = gpt(stub, vision_models=["stub-model"], image_max_side=256)
    async with running_bot(synapse, tmp_path, encryption=encrypted, extra=extra) as bot:
        async with await linked_user(synapse, bot, "rue") as rue:
            room = await dm(rue, bot.user_id, encrypted=encrypted)
            sent = await send_image(rue, room, make_png(300, 200), encrypt=encrypted)
            ack = await reply_to(rue, room, bot.user_id, sent)
            assert ack["content"]["body"].startswith("🖼️ I have your image (300×200)")
            assert len(await rows(bot.config.database.url, ChatMedia)) == 1
            await rue.client.room_redact(room, sent, reason="wrong picture")
            await until(lambda: rows(bot.config.database.url, ChatMedia), lambda found: not found)
            question = await rue.send_text(room, "What is in the picture?")
            answer = await reply_to(rue, room, bot.user_id, question)
            assert answer["content"]["body"] == "Echo: What is in the picture?"
            assert all(isinstance(m["content"], str) for m in stub.last_messages())
            assert stub.images_seen == []


async def test_images_leave_the_prompt_by_the_token_budget(synapse, stub, tmp_path):
    extra = gpt(
        stub, vision_models=["stub-model"], image_max_side=128, image_token_cost=220,
        history_token_budget=250,
    )  # fmt: skip
    async with running_bot(synapse, tmp_path, extra=extra) as bot:
        async with await linked_user(synapse, bot, "ira") as ira:
            room = await dm(ira, bot.user_id, encrypted=False)
            sent = await send_image(ira, room, make_png(300, 300))
            await reply_to(ira, room, bot.user_id, sent)
            first = await ira.send_text(room, "Look")
            await reply_to(ira, room, bot.user_id, first)
            second = await ira.send_text(room, "And now?")
            await reply_to(ira, room, bot.user_id, second)
            # The first turn (image 220 tokens + text) no longer fits beside the new one.
            assert all(isinstance(m["content"], str) for m in stub.last_messages())
            assert len(stub.images_seen) == 1


@PLAIN_AND_ENCRYPTED
async def test_a_voice_message_is_transcribed_answered_and_the_answer_spoken(
    synapse, stub, tmp_path, encrypted
):
    extra = gpt(
        stub, transcription_model="whisper-stub", speak_replies=True, speech_model="tts-stub",
        speech_format="wav", audio_token_cost_per_second=10,
    )  # fmt: skip
    async with running_bot(synapse, tmp_path, encryption=encrypted, extra=extra) as bot:
        async with await linked_user(synapse, bot, "val") as val:
            room = await dm(val, bot.user_id, encrypted=encrypted)
            voice = await send_voice(val, room, make_wav(2.0), seconds=2.0, encrypt=encrypted)
            heard = await reply_to(val, room, bot.user_id, voice)
            assert heard["content"]["body"] == "🎤 I heard:\n\n> I heard 2.0 seconds of audio"
            assert "<blockquote>" in heard["content"]["formatted_body"]
            answer = await reply_to(val, room, bot.user_id, heard["event_id"])
            assert answer["content"]["body"] == "Echo: I heard 2.0 seconds of audio"
            spoken = await reply_to(val, room, bot.user_id, answer["event_id"], msgtype="m.audio")
            content = spoken["content"]
            assert "org.matrix.msc3245.voice" in content
            assert ("file" in content) == encrypted and ("url" in content) != encrypted
            audio = await download(val, content)
            assert wav_seconds(audio) == pytest.approx(content["info"]["duration"] / 1000, abs=0.01)
            assert stub.transcriptions[-1]["model"] == "whisper-stub"
            assert stub.transcriptions[-1]["seconds"] == pytest.approx(2.0)
            assert stub.transcriptions[-1]["response_format"] == "verbose_json"
            assert stub.speech_requests[-1]["input"] == "Echo: I heard 2.0 seconds of audio"

            [usage] = await until(
                lambda: rows(bot.config.database.url, GptUsage),
                lambda found: len(found) == 1 and found[0].requests == 3,
            )  # transcription, chat, speech: each counted once, nothing left reserved
            assert usage.reserved_tokens == 0
            # 2 s heard and the spoken answer's length, 10 tokens a second each, beside the chat
            # turn's tokens (as the stub reported them: one per word).
            prompt = 5 + 6  # "You are the test assistant." and the transcript
            speech = math.ceil(wav_seconds(audio) * 10)  # the 7 words of the answer: 2.8 s
            assert usage.prompt_tokens == 20 + prompt + speech
            assert usage.completion_tokens == 7


async def test_a_voice_message_that_lies_about_its_length_pays_its_real_length(
    synapse, stub, tmp_path
):
    """Declared 1 ms each: a 6 s Ogg Opus recording (its last page claiming 1 ms too) costs
    6 s; a 40 s one is refused before the model hears it (the limit is 10 s)."""
    extra = gpt(
        stub, transcription_model="whisper-stub", audio_max_seconds=10,
        audio_token_cost_per_second=10,
    )  # fmt: skip
    async with running_bot(synapse, tmp_path, extra=extra) as bot:
        async with await linked_user(synapse, bot, "lia") as lia:
            room = await dm(lia, bot.user_id, encrypted=False)
            six = make_ogg_opus(6.0, granule=48)
            sent = await send_voice(lia, room, six, seconds=0.001, mimetype="audio/ogg")
            heard = await reply_to(lia, room, bot.user_id, sent)
            assert heard["content"]["body"] == f"🎤 I heard:\n\n> I heard {len(six)} bytes of audio"
            await reply_to(lia, room, bot.user_id, heard["event_id"])  # the answer
            [usage] = await until(
                lambda: rows(bot.config.database.url, GptUsage),
                lambda found: len(found) == 1 and found[0].requests == 2,
            )
            assert usage.reserved_tokens == 0
            # 6 s at 10 tokens a second (not 1 ms), beside the chat turn's prompt tokens.
            assert usage.prompt_tokens == 60 + 5 + 6

            forty = make_ogg_opus(40.0)
            long = await send_voice(lia, room, forty, seconds=0.001, mimetype="audio/ogg")
            refusal = await reply_to(lia, room, bot.user_id, long)
            assert refusal["content"]["body"] == (
                "⚠️ This voice message is too long: I listen to at most 10 s."
            )
            assert len(stub.transcriptions) == 1
            [usage] = await rows(bot.config.database.url, GptUsage)
            assert (usage.prompt_tokens, usage.reserved_tokens, usage.requests) == (71, 0, 2)


@PLAIN_AND_ENCRYPTED
async def test_image_command_posts_a_generated_picture(synapse, stub, tmp_path, encrypted):
    extra = gpt(stub, image_model="img-stub", image_size="512x512", image_generation_token_cost=500)
    async with running_bot(synapse, tmp_path, encryption=encrypted, extra=extra) as bot:
        async with await linked_user(synapse, bot, "pia") as pia:
            room = await dm(pia, bot.user_id, encrypted=encrypted)
            ask = await pia.send_text(room, "!image a red fox in the snow")
            picture = await reply_to(pia, room, bot.user_id, ask, msgtype="m.image")
            content = picture["content"]
            assert content["body"] == "a red fox in the snow"
            assert content["m.relates_to"]["m.in_reply_to"]["event_id"] == ask
            assert (content["info"]["w"], content["info"]["h"]) == (256, 256)
            with Image.open(io.BytesIO(await download(pia, content))) as image:
                assert image.format == "PNG" and image.size == (256, 256)
            if encrypted:
                assert pia.is_decrypted(picture["event_id"]) and "file" in content
            assert stub.image_requests[-1]["prompt"] == "a red fox in the snow"
            usage = await pia.ask(room, "!usage", sender=bot.user_id, timeout=20)
            assert usage["content"]["body"].startswith("Today you used 500 of your 20,000 tokens")


async def test_refusals_oversize_feature_off_and_quota(synapse, stub, tmp_path):
    extra = gpt(
        stub, image_model="img-stub", image_generation_token_cost=500, daily_token_quota=700,
        vision_models=["stub-model"], media_max_bytes=1024 * 1024,
    )  # fmt: skip
    async with running_bot(synapse, tmp_path, extra=extra) as bot:
        async with await linked_user(synapse, bot, "ola") as ola:
            room = await dm(ola, bot.user_id, encrypted=False)
            # Declared too large: refused before any download.
            big = await send_image(ola, room, make_png(10, 10), declared_size=50 * 1024 * 1024)
            refusal = await reply_to(ola, room, bot.user_id, big)
            assert refusal["content"]["body"].startswith("⚠️ This file is too large (50.0 MiB")
            # Declared small, really large: the download stops at the limit.
            liar = await send_image(ola, room, os.urandom(2 * 1024 * 1024), declared_size=1000)
            refusal = await reply_to(ola, room, bot.user_id, liar)
            assert "larger than 1 MiB" in refusal["content"]["body"]
            # Not an image at all.
            junk = await send_image(ola, room, b"GIF89a" + b"\x00" * 100)
            refusal = await reply_to(ola, room, bot.user_id, junk)
            assert refusal["content"]["body"].startswith("⚠️ I cannot use this image")
            # Voice is off (no transcription model): said so, in words.
            voice = await send_voice(ola, room, make_wav(1.0), seconds=1.0)
            refusal = await reply_to(ola, room, bot.user_id, voice)
            assert "I cannot listen to voice messages here" in refusal["content"]["body"]
            assert stub.transcriptions == []
            # Quota: 700 tokens a day, a picture costs 500; the second is refused before asking.
            first = await ola.ask(room, "!image a cat", sender=bot.user_id, timeout=20)
            assert first["content"]["msgtype"] == "m.image"
            second = await ola.ask(room, "!image another cat", sender=bot.user_id, timeout=20)
            assert second["content"]["body"].startswith(
                "⚠️ This needs 500 tokens of your daily quota and 200 are left."
            )
            assert len(stub.image_requests) == 1
            assert stub.images_seen == [] and stub.counts["requests"] == 0


async def test_media_switched_off_by_config_and_by_room(synapse, stub, tmp_path):
    account = synapse.fresh_account("uma")
    async with running_bot(synapse, tmp_path, admins=[account.user_id], extra=gpt(stub)) as bot:
        await link_url(bot.config.database.url, account.user_id)
        async with await TestUser.login(synapse.base_url, account) as uma:
            room = await dm(uma, bot.user_id, encrypted=False)
            sent = await send_image(uma, room, make_png(20, 20))
            refusal = await reply_to(uma, room, bot.user_id, sent)
            assert refusal["content"]["body"].startswith(
                "⚠️ The assistant's model here (stub-model) cannot look at images."
            )
            off = await uma.ask(room, "!image a dog", sender=bot.user_id, timeout=20)
            assert off["content"]["body"].startswith("⚠️ I cannot make pictures here")
            assert stub.image_requests == []
            shown = await uma.ask(room, "!media", sender=bot.user_id, timeout=20)
            assert shown["content"]["body"] == (
                "Images in: **off** (global). Voice messages in: **off** (config). Spoken "
                "answers: **off** (global) (no speech model configured). Pictures (`!image`): "
                "**off** (config)."
            )
            # A moderator switches images in on for this room (for a model that can see).
            on = await uma.ask(room, "!media vision on", sender=bot.user_id, timeout=20)
            assert on["content"]["body"] == (
                "Images in (the model looks at images members send): **on** in this room."
            )
            again = await send_image(uma, room, make_png(20, 20))
            ack = await reply_to(uma, room, bot.user_id, again)
            assert ack["content"]["body"].startswith("🖼️ I have your image (20×20)")


async def test_an_image_in_an_assistant_thread_with_a_caption_is_answered_there(
    synapse, stub, tmp_path
):
    extra = gpt(stub, vision_models=["stub-model"], image_max_side=100)
    async with running_bot(synapse, tmp_path, extra=extra) as bot:
        async with (
            await linked_user(synapse, bot, "tom") as tom,
            await linked_user(synapse, bot, "una") as una,
        ):  # three members: a room, not a DM
            room = await tom.create_room(invite=[bot.user_id, una.user_id], name="studio")
            await una.join(room)
            await tom.wait_for_membership(room, bot.user_id, "join", timeout=15)
            # An image in the room, outside any assistant thread, is none of the bot's business.
            stray = await send_image(tom, room, make_png(50, 50))
            question = await tom.send_text(room, "!ask hello")
            opened = await reply_to(tom, room, bot.user_id, stray)
            assert opened["content"]["m.relates_to"]["event_id"] == question
            thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": question}}
            sent = await send_image(
                tom, room, make_png(400, 200), caption="what is in it?", extra=thread
            )
            answer = await reply_to(tom, room, bot.user_id, sent)
            name = tom.user_id[1:].split(":")[0]
            assert answer["content"]["body"] == (
                f"I see an image of 100x50. Echo: {name}: what is in it?"
            )
            assert answer["content"]["m.relates_to"]["rel_type"] == "m.thread"
            assert answer["content"]["m.relates_to"]["event_id"] == question
            assert len(stub.images_seen) == 1


def noise_jpeg(width: int, height: int) -> bytes:
    """A photo-sized image that does not compress: about 5 MB of JPEG for 3000x2000."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def test_big_images_and_bombs_never_stall_the_event_loop(synapse, stub, tmp_path):
    """A member sends a 5 MB photo and a decompression bomb into an encrypted DM: downloads,
    decryption, checks and shrinking all run off the event loop (the bot runs in the test's
    loop, so a stall would show in LoopLag), and another member's `!ping` keeps coming back."""
    extra = gpt(stub, vision_models=["stub-model"], image_max_side=1024)
    async with running_bot(synapse, tmp_path, encryption=True, extra=extra) as bot:
        async with (
            await linked_user(synapse, bot, "mal") as mal,
            await linked_user(synapse, bot, "amy") as amy,
        ):
            mal_dm = await dm(mal, bot.user_id, encrypted=True)
            amy_dm = await dm(amy, bot.user_id, encrypted=True)
            photo = await asyncio.to_thread(noise_jpeg, 3000, 2000)
            bomb = io.BytesIO()
            Image.new("1", (14_000, 14_000)).save(bomb, "PNG")  # 196 Mpx in a few KB
            # The member's client encrypts and uploads before the watch starts (it shares the
            # test's loop): what is measured is the bot.
            photo_file = await upload(mal, photo, "image/jpeg", encrypt=True)
            bomb_file = await upload(mal, bomb.getvalue(), "image/png", encrypt=True)

            async def send(file: dict[str, Any], size: int) -> str:
                content = {"info": {"mimetype": "image/png", "size": size}, **file}
                return await mal.send_text(
                    mal_dm, "x.png", msgtype="m.image", extra_content=content
                )

            async with LoopLag() as lag:
                sent = await send(photo_file, len(photo))
                pong = await amy.ask(amy_dm, "!ping", sender=bot.user_id, timeout=20)
                assert pong["content"]["body"].startswith("Pong!")
                ack = await reply_to(mal, mal_dm, bot.user_id, sent)
                assert ack["content"]["body"].startswith("🖼️ I have your image (3000×2000)")
                question = await mal.send_text(mal_dm, "What is it?")
                answer = await reply_to(mal, mal_dm, bot.user_id, question)
                assert answer["content"]["body"] == "I see an image of 1024x683. Echo: What is it?"
                boom = await send(bomb_file, len(bomb.getvalue()))
                refusal = await reply_to(mal, mal_dm, bot.user_id, boom)
                assert "too many pixels" in refusal["content"]["body"]
            print(f"worst loop lag: {lag.overall or lag.worst:.3f} s")
            assert max(lag.overall, lag.worst) < 0.1, "\n".join(lag.stacks)
