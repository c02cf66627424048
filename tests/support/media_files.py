"""Tiny media files made by hand, byte for byte: enough of each format for a magic-number check and a byte count."""

from __future__ import annotations

import struct
import zlib


def png(seed: int, width: int = 8, height: int = 8) -> bytes:
    """A valid PNG of one grey level (``seed`` varies the pixels, so the bytes)."""
    raw = b"".join(b"\0" + bytes([(seed + y) % 256]) * width for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def jpeg(seed: int) -> bytes:
    """A JPEG's start (SOI, a JFIF APP0), a comment that varies with ``seed``, and its end (EOI)."""
    comment = f"batchflow test {seed}".encode()
    return (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + b"\xff\xd9")


def pdf(seed: int, pages: int = 1) -> bytes:
    """A minimal PDF of ``pages`` empty pages."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    body = ["1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n",
            f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj\n"]
    body += [f"{3 + i} 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n" for i in range(pages)]
    return f"%PDF-1.4\n% seed {seed}\n{''.join(body)}trailer << /Root 1 0 R >>\n%%EOF\n".encode()


def wav(seed: int, seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A mono 8-bit PCM WAV of ``seconds`` of one level."""
    frames = bytes([(128 + seed) % 256]) * int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    data = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", 4 + len(data)) + b"WAVE" + data
