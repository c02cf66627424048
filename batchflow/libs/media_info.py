"""What a media file's own header says of its extent: an image's width and height (PNG, JPEG), a PDF's page count,
a WAV's or an MP4's duration. Token costs are counted from these (spec/limits.py has the rates); a header this
module cannot read gives None, and the caller decides what that costs."""

from __future__ import annotations

import re
import struct

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")  # a page object, not the /Pages tree above them


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG (its IHDR chunk) or a JPEG (its first start-of-frame marker)."""
    if data.startswith(_PNG) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def pdf_pages(data: bytes) -> int | None:
    """How many page objects a PDF holds (None when it is not a PDF; a PDF whose pages sit in compressed object
    streams counts as one page)."""
    if not data.startswith(b"%PDF"):
        return None
    return max(1, len(_PDF_PAGE.findall(data)))


def seconds(data: bytes) -> float | None:
    """A WAV's duration (its data chunk over its byte rate) or an MP4/MOV's (its movie header), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_seconds(data)
    if data[4:8] == b"ftyp":
        return _mp4_seconds(data)
    return None


def _wav_seconds(data: bytes) -> float | None:
    byte_rate = None
    i = 12
    while i + 8 <= len(data):
        chunk, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        if chunk == b"fmt " and size >= 12:
            byte_rate = struct.unpack("<I", data[i + 16:i + 20])[0]
        elif chunk == b"data":
            return size / byte_rate if byte_rate else None
        i += 8 + size + (size & 1)
    return None


def _mp4_seconds(data: bytes) -> float | None:
    at = data.find(b"mvhd")
    if at < 0 or at + 24 > len(data):
        return None
    version = data[at + 4]
    if version == 1:
        timescale, duration = struct.unpack(">IQ", data[at + 24:at + 36])
    else:
        timescale, duration = struct.unpack(">II", data[at + 16:at + 24])
    return duration / timescale if timescale else None
