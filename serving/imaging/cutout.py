"""Turn an image and its mask into the response image, and encode it.

Follows ``Remover.process``: alpha is the mask scaled to 0..255 by truncation,
``threshold`` makes it hard, ``reverse`` keeps the background.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from serving.imaging.contract import in_row_blocks, mask_to_uint8, upsample_mask
from serving.imaging.png import encode_png
from serving.imaging.refine import refine_colours
from serving.params import CutoutParams

WEBP_METHOD = 0  # fastest encoder effort
WEBP_LOSSLESS_EFFORT = 0  # lossless: quality is the compression effort; 0 is the fastest
JPEG_QUALITY = 90
REFINE_MAX_PIXELS = 12_000_000


def output_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(width, height) of the response: the input's, scaled down so the long side fits ``max_size``."""
    width, height = size
    if max_size is None or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.size == size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def final_alpha(mask: np.ndarray, params: CutoutParams) -> np.ndarray:
    """Mask in [0, 1] at the output size -> alpha in [0, 1] after threshold and reverse."""
    alpha = mask
    if params.threshold is not None:
        alpha = (alpha > params.threshold).astype(np.float32)
    if params.reverse:
        alpha = 1.0 - alpha
    return alpha


def compose(
    img: Image.Image, alpha: np.ndarray, params: CutoutParams, refine_max_pixels: int = REFINE_MAX_PIXELS
) -> np.ndarray:
    """RGB image and alpha (same size) -> the requested output's pixels: (H, W) mask, (H, W, 4) RGBA or (H, W, 3) RGB.

    ``refine`` over ``refine_max_pixels`` estimates edge colours at a reduced size.
    """
    if params.output == "mask":
        return mask_to_uint8(alpha)
    rgb = np.asarray(img)
    if params.refine and params.threshold is None:
        rgb = refine_colours(rgb, alpha, refine_max_pixels)
    if params.output == "rgba":
        rgba = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)

        def fill(start: int, stop: int) -> None:  # one pass over the output, on threads
            rgba[start:stop, :, :3] = rgb[start:stop]
            rgba[start:stop, :, 3] = mask_to_uint8(alpha[start:stop])

        in_row_blocks(fill, len(rgba))
        return rgba
    weight = alpha[..., None].astype(np.float32)
    background = np.array(params.bg_color, dtype=np.float32)
    blended = rgb.astype(np.float32) * weight + background * (1.0 - weight)
    return (blended + 0.5).astype(np.uint8)


def cutout_pixels(
    img: Image.Image, mask: np.ndarray, params: CutoutParams, refine_max_pixels: int = REFINE_MAX_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """The decoded image and the model's (H, W) mask -> the response's pixels and (width, height).

    The one post-processing path of the API and of ``batch``, so both give the same bytes.
    """
    size = output_size(img.size, params.max_size)
    alpha = final_alpha(upsample_mask(mask, (size[1], size[0])), params)
    return compose(resize_image(img, size), alpha, params, refine_max_pixels), size


def encode(pixels: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """The response body. PNG: ``serving.imaging.png`` (lossless, parallel). WebP: lossless without ``quality``;
    with it, lossy colour at that quality and lossless alpha. JPEG: ``quality`` or 90."""
    if fmt == "png":
        return encode_png(pixels)
    img = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt == "webp" and quality is None:
        img.save(buffer, format="WEBP", lossless=True, exact=True, quality=WEBP_LOSSLESS_EFFORT, method=WEBP_METHOD)
    elif fmt == "webp":
        img.save(buffer, format="WEBP", quality=quality, alpha_quality=100, method=WEBP_METHOD)
    elif fmt == "jpeg":
        img.save(buffer, format="JPEG", quality=quality or JPEG_QUALITY)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buffer.getvalue()
