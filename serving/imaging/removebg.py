"""The result of ``POST /v1.0/removebg``: remove.bg's options applied to our cutout.

The cutout itself is ``cutout_pixels`` at ``output=rgba``, the path of our own
route, so a request with no option that changes pixels gives the same bytes
on both routes. Then, in this order: ``roi`` (alpha outside it is zero),
``scale``/``position`` (the subject moved and scaled on a canvas of the
image's size), ``crop`` with ``crop_margin`` (the canvas cut to the subject,
margins clamped as remove.bg does, transparent beyond the image), the
background (``bg_color`` or a background image scaled to cover the canvas),
``channels``, and the format.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from serving.imaging.contract import ImageError
from serving.imaging.cutout import cutout_pixels, encode, resize_image
from serving.params import CutoutParams
from serving.removebg_params import MAX_MARGIN_PX, MAX_MARGIN_SHARE, Length, RemoveBgParams

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "zip": "application/zip"}
WHITE = (255, 255, 255, 255)
_RGBA_PNG = CutoutParams(output="rgba", format="png")


class NoForegroundError(ImageError):
    """Nothing in the image (or its region of interest) was found as foreground."""


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    width: int
    height: int


@dataclass(frozen=True)
class RemoveBgResult:
    body: bytes
    media_type: str
    width: int
    height: int
    foreground: Box


def fit_megapixels(img: Image.Image, megapixels: float) -> Image.Image:
    """The image scaled down (aspect kept) to at most ``megapixels``; unchanged when it fits."""
    width, height = img.size
    limit = megapixels * 1_000_000
    if width * height <= limit:
        return img
    factor = math.sqrt(limit / (width * height))
    return resize_image(img, (max(1, int(width * factor)), max(1, int(height * factor))))


def _pixels(length: Length, whole: int) -> float:
    value, unit = length
    return value * whole / 100 if unit == "%" else value


def apply_roi(rgba: np.ndarray, roi: tuple[Length, Length, Length, Length]) -> None:
    """Zero the alpha outside the region of interest (in place)."""
    height, width = rgba.shape[:2]
    x1, x2 = (round(_pixels(v, width)) for v in (roi[0], roi[2]))
    y1, y2 = (round(_pixels(v, height)) for v in (roi[1], roi[3]))
    x1, x2, y1, y2 = max(0, x1), min(width, x2), max(0, y1), min(height, y2)
    if x1 >= x2 or y1 >= y2:
        raise ImageError(f"roi selects no pixels of the {width}x{height} image")
    keep = np.zeros(rgba.shape[:2], dtype=bool)
    keep[y1:y2, x1:x2] = True
    rgba[..., 3][~keep] = 0


def foreground_box(alpha: np.ndarray) -> Box | None:
    """The smallest rectangle that holds every pixel with alpha > 0; None when there is none."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return Box(int(rows[0]), int(cols[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def place_subject(rgba: np.ndarray, box: Box, scale: float | None, position: tuple[float, float]) -> np.ndarray:
    """The subject on a transparent canvas of the image's size, scaled to ``scale`` of it, placed at ``position``."""
    height, width = rgba.shape[:2]
    subject = Image.fromarray(rgba[box.top : box.top + box.height, box.left : box.left + box.width], "RGBA")
    if scale is not None:
        factor = scale * min(width / box.width, height / box.height)
        size = (max(1, round(box.width * factor)), max(1, round(box.height * factor)))
        subject = subject.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    left = round((width - subject.width) * position[0])
    top = round((height - subject.height) * position[1])
    canvas.paste(subject, (left, top))
    return np.asarray(canvas).copy()


def crop_to_subject(rgba: np.ndarray, box: Box, margin: tuple[Length, Length, Length, Length]) -> np.ndarray:
    """The subject's box plus margins (top, right, bottom, left); transparent where that leaves the image."""
    top, right, bottom, left = (
        round(min(_pixels(length, whole), MAX_MARGIN_SHARE * whole, MAX_MARGIN_PX))
        for length, whole in zip(margin, (box.height, box.width, box.height, box.width))
    )
    out = np.zeros((box.height + top + bottom, box.width + left + right, 4), dtype=np.uint8)
    out[top : top + box.height, left : left + box.width] = rgba[
        box.top : box.top + box.height, box.left : box.left + box.width
    ]
    return out


def add_background(rgba: np.ndarray, color: tuple[int, int, int, int] | None, image: Image.Image | None) -> np.ndarray:
    """The cutout over a colour or over an image scaled (aspect kept) and centred to cover the canvas."""
    height, width = rgba.shape[:2]
    if image is not None:
        layer = image.convert("RGBA")
        if layer.size != (width, height):
            layer = ImageOps.fit(layer, (width, height), Image.Resampling.BILINEAR)
    else:
        layer = Image.new("RGBA", (width, height), color or WHITE)
    return np.asarray(Image.alpha_composite(layer, Image.fromarray(rgba, "RGBA"))).copy()


def _zip(rgba: np.ndarray) -> bytes:
    """remove.bg's ZIP: the colour image as color.jpg and the alpha matte as alpha.png."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("color.jpg", encode(np.ascontiguousarray(rgba[..., :3]), "jpeg"))
        archive.writestr("alpha.png", encode(np.ascontiguousarray(rgba[..., 3]), "png"))
    return buffer.getvalue()


def _encode(rgba: np.ndarray, params: RemoveBgParams) -> tuple[bytes, str]:
    alpha_only = params.channels == "alpha"
    fmt = params.format
    if fmt == "auto":
        fmt = "png" if not alpha_only and bool((rgba[..., 3] < 255).any()) else "jpg"
    if fmt == "zip":
        return _zip(rgba), fmt
    if alpha_only:
        pixels = np.ascontiguousarray(rgba[..., 3])
    elif fmt == "jpg":
        pixels = np.ascontiguousarray(add_background(rgba, WHITE, None)[..., :3])
    else:
        pixels = rgba
    return encode(pixels, "jpeg" if fmt == "jpg" else fmt), fmt


def removebg_result(
    img: Image.Image, mask: np.ndarray, params: RemoveBgParams, refine_max_pixels: int, background: Image.Image | None
) -> RemoveBgResult:
    """The decoded image (already fitted to the size's megapixels) and its mask -> the encoded result."""
    rgba, _ = cutout_pixels(img, mask, _RGBA_PNG, refine_max_pixels)
    if params.roi is not None:
        apply_roi(rgba, params.roi)
    box = foreground_box(rgba[..., 3])
    if box is None:
        raise NoForegroundError(
            "could not identify a foreground in the image" + (" inside the roi" if params.roi else "")
        )
    if params.scale is not None or params.position is not None:
        rgba = place_subject(rgba, box, params.scale, params.position or (0.5, 0.5))
        box = foreground_box(rgba[..., 3]) or box
    if params.crop:
        rgba = crop_to_subject(rgba, box, params.crop_margin)
        box = foreground_box(rgba[..., 3]) or box
    if params.bg_color is not None or background is not None:
        rgba = add_background(rgba, params.bg_color, background)
    body, fmt = _encode(rgba, params)
    return RemoveBgResult(body, MEDIA_TYPES[fmt], rgba.shape[1], rgba.shape[0], box)
