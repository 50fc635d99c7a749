"""serving.imaging.png: the parallel PNG writer makes the pixels Pillow's encoder makes, readable by libpng too."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from serving.imaging.png import IDAT_BYTES, encode_png


def photo_rgba(width: int, height: int) -> np.ndarray:
    from pipeline import samples

    rgb = np.asarray(samples.photo("astronaut").resize((width, height), Image.BILINEAR))
    yy, xx = np.mgrid[0:height, 0:width]
    alpha = np.clip((xx - width / 3) * 2, 0, 255).astype(np.uint8)  # transparent, a soft edge, opaque
    return np.dstack([rgb, alpha])


def straightforward(pixels: np.ndarray) -> np.ndarray:
    """What Pillow's own PNG encoder round-trips."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def decode_with_libpng(data: bytes) -> np.ndarray:
    """OpenCV decodes PNG with libpng, the decoder browsers descend from; BGR(A) back to RGB(A)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return pixels


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("RGBA", (1200, 900)),
        ("RGB", (451, 300)),
        ("L", (300, 451)),
        ("LA", (97, 33)),
        ("RGBA", (1, 1)),
        ("RGBA", (7, 1300)),
    ],
)
def test_pixels_equal_pillows_encoder_and_libpng_reads_them(mode, size):
    pixels = np.asarray(Image.fromarray(photo_rgba(*size)).convert(mode))
    data = encode_png(pixels)
    ours = np.asarray(Image.open(io.BytesIO(data)))
    assert Image.open(io.BytesIO(data)).mode == mode
    assert np.array_equal(ours, straightforward(pixels))
    read = decode_with_libpng(data)
    if mode == "LA":  # OpenCV reads gray+alpha as four channels
        read = read[..., [0, 3]]
    assert np.array_equal(read, pixels)


def test_noise_spans_several_idat_chunks_and_strips():
    pixels = np.random.default_rng(0).integers(0, 256, (1100, 1000, 4), dtype=np.uint8)  # incompressible
    data = encode_png(pixels)
    assert data.count(b"IDAT") >= 4 > 0
    assert len(data) > 3 * IDAT_BYTES
    image = Image.open(io.BytesIO(data))
    image.verify()  # CRCs of every chunk, and the zlib stream's Adler-32 on load below
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert np.array_equal(decode_with_libpng(data), pixels)


def test_refuses_what_png_cannot_hold_this_way():
    with pytest.raises(ValueError, match=r"expected uint8 \(H, W, 1-4\), got float32"):
        encode_png(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected uint8 \(H, W, 1-4\), got uint8 \(4, 4, 5\)"):
        encode_png(np.zeros((4, 4, 5), dtype=np.uint8))
