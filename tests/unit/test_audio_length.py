"""Voice messages measured from their bytes (bot/community/audio_length.py): WAV frames present,
Ogg Opus packets counted, Ogg Vorbis by its last granule; linear on hostile files."""

from __future__ import annotations

import time

import pytest

from bot.community.audio_length import measure
from tests.harness.llm_stub_media import make_wav
from tests.harness.ogg_audio import make_ogg_opus, make_ogg_vorbis, opus_head, page


def test_wav_is_measured_by_the_frames_present_not_its_header():
    honest = measure(make_wav(2.5))
    assert honest is not None and honest.exact and honest.seconds == pytest.approx(2.5)
    wav = bytearray(make_wav(6.0))
    data_at = wav.index(b"data")
    wav[data_at + 4 : data_at + 8] = (16).to_bytes(4, "little")  # "one millisecond of data"
    lying = measure(bytes(wav))
    assert lying is not None and lying.seconds == pytest.approx(6.0, abs=0.01)


def test_ogg_opus_is_measured_by_its_packets_and_granule():
    honest = measure(make_ogg_opus(3.0))
    assert honest is not None and (honest.format, honest.exact) == ("opus", True)
    assert honest.seconds == pytest.approx(3.0, abs=0.01)
    # The last page claims 1 ms: the 150 packets of 20 ms are still counted.
    lying = measure(make_ogg_opus(3.0, granule=48))
    assert lying is not None and lying.seconds == pytest.approx(3.0, abs=0.01)
    # A granule claiming more than the packets hold is believed (the liar pays more).
    longer = measure(make_ogg_opus(3.0, granule=312 + 48_000 * 10))
    assert longer is not None and longer.seconds == pytest.approx(10.0)


def test_ogg_vorbis_uses_its_header_rate_and_is_only_a_hint():
    found = measure(make_ogg_vorbis(44_100, 44_100 * 7))
    assert found is not None and found.seconds == pytest.approx(7.0)
    assert (found.format, found.exact) == ("vorbis", False)


def test_a_cut_file_holds_what_is_there():
    cut = measure(make_ogg_opus(2.0)[:4000])  # the head, tags and some 60-byte packets
    assert cut is not None and 0 < cut.seconds < 2.0


@pytest.mark.parametrize(
    "data",
    [b"", b"ID3\x03 an mp3", b"OggS", b"OggS" + b"\0" * 40, b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0",
     page([b"no codec we know"], granule=480_000)],
    ids=["empty", "mp3", "capture-only", "zero-page", "cut-wav", "unknown-codec"],
)  # fmt: skip
def test_other_or_broken_files_are_unknown(data):
    assert measure(data) is None


def test_hostile_files_are_measured_in_linear_time():
    head = page([opus_head()], granule=0, flags=2) + page([b"OpusTags"], granule=0, seq=1)
    tiny = page([bytes([16 << 3])] * 255, granule=0, seq=2) * 30_000  # 2.5 ms each, 16 MB
    cases = {
        "a million 2.5 ms packets": head + tiny,
        "capture patterns only": b"OggS" * (4 * 1024 * 1024),
        "endless wav chunks": b"RIFF\0\0\0\0WAVE" + b"junk\0\0\0\0" * (2 * 1024 * 1024),
    }
    started = time.monotonic()
    counted = measure(cases["a million 2.5 ms packets"], enough=300)
    assert counted is not None and counted.seconds > 300  # stopped early: too long anyway
    assert measure(cases["capture patterns only"], enough=300) is None
    assert measure(cases["endless wav chunks"], enough=300) is None
    assert time.monotonic() - started < 2.0
