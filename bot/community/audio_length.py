"""How long a voice message really is, read from the file itself: the member's declared
`info.duration` decides nothing that costs money. One pass over the bytes, linear in the size
whatever a hostile file holds; run it off the event loop for big files.

- WAV: the frames actually present (the data chunk's bytes), not only what its header claims.
- Ogg Opus: every audio packet's frames counted from its TOC byte (RFC 6716 §3.1), so a last
  page with a small granule position cannot hide audio that a decoder would play; the larger of
  that and the last granule position, minus the pre-skip, at 48 kHz.
- Ogg Vorbis: the last granule position over the header's sample rate. Counting Vorbis frames
  needs its codebooks, so this figure is a hint (`exact` False): it may refuse a message, but the
  money held is the longest one accepted.
- Anything else: unknown (None)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

OPUS_RATE = 48_000
MAX_OGG_STREAMS = 16  # a voice message has one; a file with more is not measured
MAX_OGG_WASTE = 1_000  # lost syncs and empty pages; a file with more is not measured
MAX_WAV_CHUNKS = 64
_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, segments
# Opus frame lengths in 48 kHz samples, by the TOC byte's configuration number (RFC 6716 §3.1).
_OPUS_FRAME = tuple(
    (480, 960, 1920, 2880)[c % 4] if c < 12 else (480, 960)[c % 2] if c < 16
    else (120, 240, 480, 960)[c % 4]
    for c in range(32)
)  # fmt: skip


@dataclass(frozen=True)
class AudioLength:
    seconds: float
    exact: bool  # counted from the audio itself (True), or a header's claim (False)
    format: str


def measure(data: bytes, *, enough: float = float("inf")) -> AudioLength | None:
    """The length of a WAV or Ogg (Opus, Vorbis) file, or None when it is neither (or broken).
    Counting stops once the audio is known to be longer than `enough` seconds (the longest
    accepted): a file of a million tiny packets is refused after the first few thousand."""
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return _wav(data)
        if data[:4] == b"OggS":
            return _ogg(data, int(enough * OPUS_RATE) if enough != float("inf") else None)
    except struct.error:  # a header cut short
        return None
    return None


def _wav(data: bytes) -> AudioLength | None:
    pos, frame, rate = 12, 0, 0
    for _ in range(MAX_WAV_CHUNKS):  # chunks, each skipped by its size
        if pos + 8 > len(data):
            break
        name, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if name == b"fmt " and size >= 16:
            channels, rate = struct.unpack_from("<HI", data, body + 2)
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            frame = channels * ((bits + 7) // 8)
        elif name == b"data":
            if not frame or not rate:
                return None
            # The bytes present count, whatever the header says: a too-small size would hide
            # audio a lenient decoder plays (0xFFFFFFFF, as streaming writers leave it, means
            # "to the end"). A chunk after the data counts too: a little more, never less.
            return AudioLength((len(data) - body) / frame / rate, True, "wav")
        pos = body + size + (size & 1)
    return None


class _Stream:
    """One logical stream of an Ogg file, read page by page."""

    __slots__ = ("codec", "granule", "head", "packets", "pre_skip", "rate", "samples")

    def __init__(self) -> None:
        self.packets = 0  # packets finished
        self.head = bytearray()  # the first bytes of the packet being read
        self.codec = ""  # "opus" or "vorbis", from the first packet
        self.rate = 0
        self.pre_skip = 0
        self.samples = 0  # Opus: 48 kHz samples in the audio packets
        self.granule = 0

    def counting(self) -> bool:
        """Whether this stream's packets are still read: Opus audio, and every stream's headers
        (a Vorbis or unknown stream's audio pages are skipped whole)."""
        return self.packets < 2 or self.codec == "opus"

    def take(self, segment: bytes, ends: bool) -> None:
        wanted = (16 if self.packets == 0 else 2) - len(self.head)
        if wanted > 0:
            self.head += segment[:wanted]
        if ends:
            self._packet(bytes(self.head))
            self.head.clear()
            self.packets += 1

    def _packet(self, head: bytes) -> None:
        if self.packets == 0:
            if head[:8] == b"OpusHead" and len(head) >= 12:
                self.codec, self.rate = "opus", OPUS_RATE
                self.pre_skip = int.from_bytes(head[10:12], "little")
            elif head[:7] == b"\x01vorbis" and len(head) >= 16:
                self.codec, self.rate = "vorbis", int.from_bytes(head[12:16], "little")
        elif self.codec == "opus" and self.packets >= 2 and head:  # after OpusHead, OpusTags
            toc = head[0]
            code = toc & 3
            frames = 1 if code == 0 else 2 if code < 3 else (head[1] & 0x3F if len(head) > 1 else 0)
            self.samples += frames * _OPUS_FRAME[toc >> 3]

    def length(self) -> AudioLength | None:
        if self.codec == "opus":
            samples = max(self.samples, self.granule) - self.pre_skip
            return AudioLength(max(0, samples) / OPUS_RATE, True, "opus")
        if self.codec == "vorbis" and self.rate:
            return AudioLength(self.granule / self.rate, False, "vorbis")
        return None


def _ogg(data: bytes, enough: int | None) -> AudioLength | None:
    streams: dict[int, _Stream] = {}
    pos, size, waste = 0, len(data), 0
    while waste <= MAX_OGG_WASTE:
        pos = data.find(b"OggS", pos)  # lost sync is searched forward, as decoders do
        if pos < 0 or pos + _PAGE.size > size:
            break
        _, version, _, granule, serial, _, _, count = _PAGE.unpack_from(data, pos)
        table = pos + _PAGE.size
        body = table + count
        if version != 0 or body > size or count == 0 or body + sum(data[table:body]) > size:
            waste += 1  # not a page, or one cut short (a decoder drops it: its CRC fails)
            pos += 4
            continue
        stream = streams.get(serial)
        if stream is None:
            if len(streams) >= MAX_OGG_STREAMS:
                return None
            stream = streams[serial] = _Stream()
        if granule != -1:
            stream.granule = max(stream.granule, granule)
        if stream.counting():
            for lacing in data[table : table + count]:
                stream.take(data[body : body + min(lacing, 16)], lacing < 255)
                body += lacing
            if enough is not None and stream.samples - stream.pre_skip > enough:
                return stream.length()  # too long already: no need to read on
        else:
            body += sum(data[table:body])
        pos = max(body, pos + 4)
    else:
        return None
    lengths = [found for s in streams.values() if (found := s.length()) is not None]
    if not lengths:
        return None
    # Chained streams play one after the other.
    return AudioLength(
        sum(x.seconds for x in lengths), all(x.exact for x in lengths), lengths[0].format
    )
