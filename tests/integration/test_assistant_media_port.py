"""The model port's media over real HTTP: the bot's OpenAI-compatible clients (langchain-openai
for chat with image parts, the openai SDK for transcription, speech and image generation)
against the project's LLM stub. A feature the provider lacks becomes a ModelError in words."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.community.assistant_media import Transcript, wav_seconds
from bot.community.chat import ModelError, PromptMessage
from bot.community.images import for_model
from bot.llm.openai_compatible import OpenAICompatibleModel
from bot.llm.openai_media import OpenAICompatibleMedia
from tests.harness.llm_stub import LlmStub
from tests.harness.llm_stub_media import make_png, make_wav


@pytest.fixture
async def stub():
    async with LlmStub(api_key="sk-test", chunk_delay=0) as server:
        yield server


def media_port(stub: LlmStub) -> OpenAICompatibleMedia:
    return OpenAICompatibleMedia(
        base_url=stub.base_url, api_key="sk-test", timeout=5.0, max_retries=0
    )


async def test_an_image_part_reaches_the_model_and_the_answer_describes_it(stub):
    model = OpenAICompatibleModel(
        base_url=stub.base_url, api_key="sk-test", temperature=0, timeout=5.0, max_retries=0,
        stream=True,
    )  # fmt: skip
    image = for_model(make_png(2000, 1000), max_side=512, max_pixels=10_000_000)
    completion = await model.complete(
        [PromptMessage("user", "What is this?", images=(image.data_url,))],
        model="stub-model", on_text=None,
    )  # fmt: skip
    assert completion.text == "I see an image of 512x256. Echo: What is this?"
    parts = stub.last_messages()[0]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    assert parts[1]["type"] == "image_url"
    assert stub.images_seen == [
        {"mimetype": "image/jpeg", "width": 512, "height": 256, "bytes": len(image.data)}
    ]


async def test_transcription_speech_and_image_generation(stub):
    port = media_port(stub)
    text = await port.transcribe(
        make_wav(1.5), filename="voice.wav", mimetype="audio/wav", model="whisper-stub"
    )
    assert text == Transcript("I heard 1.5 seconds of audio", 1.5)
    assert stub.transcriptions[-1]["response_format"] == "verbose_json"
    assert stub.transcriptions[-1]["model"] == "whisper-stub"
    assert stub.transcriptions[-1]["filename"] == "voice.wav"

    audio = await port.speak(
        "one two three four five", model="tts-stub", voice="alloy", audio_format="wav"
    )
    assert wav_seconds(audio) == pytest.approx(2.0, abs=0.01)
    assert stub.speech_requests[-1]["input"] == "one two three four five"

    png = await port.generate_image("a red fox", model="dall-e-stub", size="512x512")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == (256, 256)
    assert stub.image_requests[-1]["prompt"] == "a red fox"
    assert stub.image_requests[-1]["response_format"] == "b64_json"


async def test_a_feature_the_provider_lacks_is_explained_not_raised(stub):
    stub.media_status = 404
    port = media_port(stub)
    with pytest.raises(ModelError, match="does not offer transcription"):
        await port.transcribe(make_wav(1), filename="v.wav", mimetype="audio/wav", model="w")
    with pytest.raises(ModelError, match="does not offer pictures"):
        await port.generate_image("x", model="img", size="256x256")
    stub.media_status = None
    with pytest.raises(ModelError, match="refused this request for spoken answers"):
        await port.speak("hi", model="tts", voice="alloy", audio_format="opus")  # stub: wav only


async def test_the_audio_length_comes_from_the_provider_when_it_says(stub):
    port = media_port(stub)
    ogg = b"OggS" + b"\x00" * 500  # not measured by the stub: no duration in its answer
    heard = await port.transcribe(ogg, filename="v.ogg", mimetype="audio/ogg", model="w")
    assert heard.seconds is None and heard.text == "I heard 504 bytes of audio"
    stub.transcription_seconds = 42.5
    heard = await port.transcribe(ogg, filename="v.ogg", mimetype="audio/ogg", model="w")
    assert heard.seconds == 42.5
    # A model that offers only `json` is asked again plainly, then plainly from then on.
    stub.json_transcription_only = True
    for _ in range(2):
        heard = await port.transcribe(ogg, filename="v.ogg", mimetype="audio/ogg", model="mini")
        assert heard == Transcript("I heard 504 bytes of audio", None)
    assert [t["response_format"] for t in stub.transcriptions[-2:]] == ["json", "json"]
    assert len(stub.transcriptions) == 4  # the refused request was not transcribed
