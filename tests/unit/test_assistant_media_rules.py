"""The assistant's media rules that need no server: reading images safely (decompression bombs,
files that are no images, shrinking), member content parsed into references, lengths."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from bot.community.assistant_media import audio_cost, declared_seconds, wav_seconds
from bot.community.images import ImageRejected, for_model, inspect_image
from bot.matrix.media import media_ref, parse_mxc
from bot.matrix.media_relay import caption
from tests.harness.llm_stub_media import make_png, make_wav


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_images_are_shrunk_to_fit_and_never_enlarged():
    big = for_model(make_png(3000, 1500), max_side=1024, max_pixels=50_000_000)
    assert (big.width, big.height, big.mimetype) == (1024, 512, "image/jpeg")
    small = for_model(make_png(300, 200), max_side=1024, max_pixels=50_000_000)
    assert (small.width, small.height) == (300, 200)
    assert big.data_url.startswith("data:image/jpeg;base64,")


def test_transparency_is_kept_as_png():
    rgba = encoded(Image.new("RGBA", (50, 40), (255, 0, 0, 128)), "PNG")
    image = for_model(rgba, max_side=32, max_pixels=1_000_000)
    assert image.mimetype == "image/png" and (image.width, image.height) == (32, 26)


@pytest.mark.parametrize(
    ("side", "why"),
    [(8_000, "too large"), (14_000, "too many pixels")],
    ids=["over-our-limit", "over-pillows-limit"],
)
def test_a_decompression_bomb_is_refused_from_its_header_quickly(side, why):
    bomb = encoded(Image.new("1", (side, side)), "PNG")  # tens of megapixels in a few KB
    assert len(bomb) < 100_000
    started = time.monotonic()
    with pytest.raises(ImageRejected, match=why):
        inspect_image(bomb, max_pixels=40_000_000)
    with pytest.raises(ImageRejected, match=why):
        for_model(bomb, max_side=1024, max_pixels=40_000_000)
    assert time.monotonic() - started < 0.5, "the pixels must not be decoded"


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"GIF89a" + b"\0" * 50, make_png(100, 100)[:200]],
    ids=["empty", "text", "broken-gif", "truncated-png"],
)
def test_files_that_are_no_images_are_refused_in_words(data):
    with pytest.raises(ImageRejected):
        inspect_image(data, max_pixels=1_000_000)
        for_model(data, max_side=64, max_pixels=1_000_000)


def test_an_svg_or_other_format_is_refused():
    tiff = encoded(Image.new("RGB", (10, 10)), "TIFF")
    with pytest.raises(ImageRejected, match="TIFF format"):
        inspect_image(tiff, max_pixels=1_000_000)


def test_member_content_becomes_a_reference_only_when_sound():
    plain = media_ref({"url": "mxc://hs.org/abc_1", "info": {"mimetype": "image/png", "size": 9}})
    assert plain is not None and plain.encryption is None and plain.size == 9
    encrypted = media_ref({"file": {
        "url": "mxc://hs.org/enc", "key": {"k": "KEY", "alg": "A256CTR", "kty": "oct"},
        "iv": "IV", "hashes": {"sha256": "HASH"}, "v": "v2",
    }})  # fmt: skip
    assert encrypted is not None and encrypted.mxc == "mxc://hs.org/enc"
    assert encrypted.encryption == {
        "key": {"k": "KEY", "alg": "A256CTR", "kty": "oct"}, "iv": "IV",
        "hashes": {"sha256": "HASH"}, "v": "v2",
    }  # fmt: skip
    for bad in (
        {"url": "https://evil.example/x.png"},
        {"url": "mxc://hs.org/../../admin"},
        {"url": "mxc://hs.org/a/b"},
        {"file": {"url": "mxc://hs.org/x", "iv": "IV", "hashes": {"sha256": "H"}}},  # no key
        {"url": 5},
        {},
    ):
        assert media_ref(bad) is None, bad
    assert media_ref({"url": "mxc://hs.org/x", "info": {"size": True, "w": "9"}}).size is None
    assert parse_mxc("mxc://" + "a" * 100_000) is None  # linear, bounded


def test_captions_and_declared_lengths():
    assert caption({"body": "what is this?", "filename": "cat.png"}) == "what is this?"
    assert caption({"body": "cat.png", "filename": "cat.png"}) is None
    assert caption({"body": "cat.png"}) is None
    assert declared_seconds(2500, 300) == 2.5
    assert declared_seconds(10**12, 300) == 301  # capped: refused as too long, held no more
    for nonsense in (None, True, -5, float("nan"), float("inf"), "3000"):
        assert declared_seconds(nonsense, 300) is None
    assert audio_cost(2.01, 10) == 21
    assert wav_seconds(make_wav(0.75)) == pytest.approx(0.75)
    assert wav_seconds(b"OggS not a wav") is None
