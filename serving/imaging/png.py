"""A fast PNG writer for cutouts: rows filtered in numpy, deflated in parallel strips, one valid PNG.

Pillow's encoder at zlib level 1 spends about 1 s on a 12 MP RGBA cutout, on
one core. This writer makes the same pixels (lossless; a test decodes both):

- every row gets PNG filter 1 (Sub: each byte minus the one a pixel to its
  left), one numpy subtraction for the whole image; on photos it compresses
  about as well as choosing a filter per row;
- the filtered rows are deflated by ISA-L (``isal``, level 1: several times
  zlib's level-1 speed at a similar size), in horizontal strips on threads:
  each strip is raw deflate ended by a full flush (byte-aligned, no
  back-references across strips), so the strips concatenate into one zlib
  stream, whose Adler-32 is computed once over all rows;
- the stream goes into IDAT chunks of 1 MiB.

PNG: https://www.w3.org/TR/png-3/ (filters: section 7.3 and 9; zlib stream:
section 10; chunks: section 5).
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA
IDAT_BYTES = 1 << 20
STRIP_ROWS = 256  # smallest strip: below it a thread costs more than it saves
LEVEL = 1
_FILTER_SUB = 1
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def filter_rows(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (H, 1 + W*C) uint8: each row's filter byte (Sub), then its filtered bytes."""
    height, width, channels = pixels.shape
    flat = pixels.reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = _FILTER_SUB
    rows[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels :])  # wraps modulo 256
    return rows


def _deflate(rows: np.ndarray, last: bool) -> bytes:
    compressor = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, -15)  # raw deflate: no header, no checksum
    return compressor.compress(rows) + compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_FULL_FLUSH)


def zlib_stream(rows: np.ndarray, strips: int) -> bytes:
    """One zlib stream (RFC 1950) of ``rows``, deflated as ``strips`` independent parts on threads."""
    bounds = np.linspace(0, len(rows), strips + 1).astype(int)
    parts = list(_pool.map(lambda i: _deflate(rows[bounds[i] : bounds[i + 1]], i == strips - 1), range(strips)))
    checksum = zlib.adler32(rows.data)
    return b"\x78\x01" + b"".join(parts) + struct.pack(">I", checksum)


def encode_png(pixels: np.ndarray, threads: int = 4) -> bytes:
    """An 8-bit gray, gray+alpha, RGB or RGBA array (H, W[, C]) as PNG bytes."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPES:
        raise ValueError(f"expected uint8 (H, W, 1-4), got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    strips = max(1, min(threads, height // STRIP_ROWS))
    stream = zlib_stream(filter_rows(np.ascontiguousarray(pixels)), strips)
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[channels], 0, 0, 0)
    idat = b"".join(_chunk(b"IDAT", stream[i : i + IDAT_BYTES]) for i in range(0, len(stream), IDAT_BYTES))
    return SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")
