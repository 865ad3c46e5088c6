"""Ogg files built by hand, page by page (RFC 3533, with real CRCs), for tests of how voice
messages are measured: Opus (RFC 7845) with as many 20 ms packets as asked and any granule
position on the last page, a lie included; Vorbis identification headers with a sample rate."""

from __future__ import annotations

import struct

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz: TOC configuration 31 (CELT fullband, 20 ms)
PRE_SKIP = 312


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC[((crc >> 24) & 0xFF) ^ byte]) & 0xFFFFFFFF
    return crc


def page(
    packets: list[bytes], *, granule: int, serial: int = 7, seq: int = 0, flags: int = 0
) -> bytes:
    """One page holding whole packets (each under 255 * 255 bytes in all)."""
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    assert len(lacing) <= 255
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, seq, 0, len(lacing))
    raw = header + bytes(lacing) + b"".join(packets)
    return raw[:22] + struct.pack("<I", _crc(raw)) + raw[26:]


def opus_head(pre_skip: int = PRE_SKIP) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48_000, 0, 0)


def make_ogg_opus(
    seconds: float, *, granule: int | None = None, packet_bytes: int = 60, serial: int = 7
) -> bytes:
    """An Ogg Opus file of `seconds` in 20 ms packets; the last page's granule position is the
    truth unless `granule` says otherwise (a file that lies about its length)."""
    count = round(seconds * 50)
    audio = [bytes([31 << 3]) + b"\x55" * (packet_bytes - 1)] * count
    pages = [
        page([opus_head()], granule=0, serial=serial, flags=2),
        page([b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)],
             granule=0, serial=serial, seq=1),
    ]  # fmt: skip
    per_page = 50
    for first in range(0, count, per_page):
        chunk = audio[first : first + per_page]
        last = first + per_page >= count
        true = PRE_SKIP + (first + len(chunk)) * OPUS_FRAME_SAMPLES
        pages.append(page(
            chunk, granule=granule if last and granule is not None else true, serial=serial,
            seq=2 + first // per_page, flags=4 if last else 0,
        ))  # fmt: skip
    return b"".join(pages)


def make_ogg_vorbis(rate: int, granule: int, *, serial: int = 9) -> bytes:
    """A Vorbis stream's identification header and one page ending at `granule`."""
    ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, rate, 0, 64_000, 0, 0xB8, 1)
    return page([ident], granule=0, serial=serial, flags=2) + page(
        [b"\x00" * 100], granule=granule, serial=serial, seq=1, flags=4
    )
