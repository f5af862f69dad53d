"""Crafted PNG files for import tests: real encodings written row by row, so an 8000 x 8000 image costs a few
hundred kilobytes and no full-size buffer, and headers that declare sizes no test could afford to decode."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

CHANNELS = {0: 1, 2: 3, 6: 4}  # PNG colour type -> channels: grey, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(
    path: Path,
    width: int,
    height: int,
    color_type: int = 0,
    row: Callable[[int], bytes] | None = None,
    rows_written: int | None = None,
) -> Path:
    """Write an 8-bit PNG of ``width`` x ``height``; ``row(y)`` gives scanline ``y`` (default: zeros).

    ``rows_written`` below ``height`` leaves the pixel data short: the header still declares the full size,
    which is all a size check may read (a decompression bomb in a few bytes).
    """
    stride = width * CHANNELS[color_type]
    row = row or (lambda _y, zero=bytes(stride): zero)
    comp = zlib.compressobj(1)
    idat = [comp.compress(b"\x00" + row(y)) for y in range(height if rows_written is None else rows_written)]
    idat.append(comp.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(idat))
        + _chunk(b"IEND", b"")
    )
    return path
