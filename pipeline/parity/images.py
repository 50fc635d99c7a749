"""The parity image set: real photos plus synthetic extremes, as encoded bytes.

Each case is encoded (PNG or JPEG) so the parity check runs the same decode
path as a client request.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline import samples

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class ParityImage:
    name: str
    data: bytes
    note: str


@dataclass
class Case:
    """One parity image with its references: what check.py compares and references.py stores."""

    image: ParityImage
    size: tuple[int, int]  # (height, width) after decoding
    tensor: np.ndarray
    model_reference: np.ndarray  # (H_in, W_in) float mask of the eager model
    end_to_end_reference: np.ndarray  # (H, W) uint8 map from Remover
    decoded: Any  # PIL image


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def synthetic_extremes() -> list[ParityImage]:
    rng = np.random.default_rng(0)
    photo = samples.photo("astronaut")
    rgba = photo.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, dtype=np.uint8)
    alpha[:, : rgba.size[0] // 3] = 0  # a transparent band on the left
    rgba.putalpha(Image.fromarray(alpha))
    noise = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    wide = samples.photo("coffee").resize((4000, 300), Image.Resampling.BILINEAR)
    return [
        ParityImage("all-black", _encode(Image.new("RGB", (640, 480), (0, 0, 0))), "constant input"),
        ParityImage("all-white", _encode(Image.new("RGB", (640, 480), (255, 255, 255))), "constant input"),
        ParityImage(
            "tiny-16x16", _encode(samples.photo("chelsea").resize((16, 16), Image.Resampling.BILINEAR)), "upsampled 24x"
        ),
        ParityImage("wide-4000x300", _encode(wide, "JPEG"), "extreme aspect ratio"),
        ParityImage("grayscale", _encode(samples.photo("chelsea").convert("L"), "JPEG"), "one channel"),
        ParityImage("rgba-transparent", _encode(rgba), "RGBA with a transparent band"),
        ParityImage("noise", _encode(Image.fromarray(noise, "RGB")), "uniform noise"),
    ]


def default_set() -> list[ParityImage]:
    photos = [ParityImage(name, _encode(img, "JPEG"), "photo") for name, img in samples.photos().items()]
    return photos + synthetic_extremes()


def from_directory(directory: Path) -> list[ParityImage]:
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [ParityImage(p.stem, p.read_bytes(), p.name) for p in files]
