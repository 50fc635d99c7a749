"""The image contract shared by the build's parity check and the server.

Pre- and post-processing reproduce transparent-background's ``Remover`` in
static mode exactly:

- the image is resized with PIL bilinear to the model's square input size,
- scaled to [0, 1] and normalised with the ImageNet mean/std, in the same
  numpy operations (so the tensor is bit-identical),
- the model's mask is brought back to the image's size with bilinear
  interpolation, align_corners=True (``F.interpolate`` in ``Remover.process``).

Only numpy and Pillow are used: no torch.
"""

from __future__ import annotations

import io
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# The decoders of FORMATS, registered explicitly: Image.open(formats=...) looks them up by name.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE_RULE = "PIL bilinear to the model's input size, aspect ratio not kept (Remover static mode)"
UPSAMPLE_RULE = "bilinear, align_corners=True, back to the decoded image's size"

DEFAULT_MAX_PIXELS = 40_000_000
# The formats docs/http-api.md documents (JPEG's opener also reads the multi-picture JPEGs phones
# write). Pillow's other decoders (DDS, EPS through Ghostscript, PSD, ...) never see a request.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """The bytes a client sent are not an image this service can use.

    ``status`` is the HTTP status the server answers with.
    """

    status = 400


class UnsupportedImageError(ImageError):
    status = 415


class ImageTooLargeError(ImageError):
    status = 413


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes into an RGB image with its EXIF orientation applied.

    Animated images give their first frame. Raises ImageError for anything a
    client could send wrongly: empty, not an image, truncated, too many pixels.
    """
    if not data:
        raise ImageError("the request holds no image data")
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's own warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)  # only these decoders ever see a request
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
                )
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit struck first, before ours could
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow opens"
        raise ImageTooLargeError(f"image is {pixels}, over the limit of {max_pixels}") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(
            "the data is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, NotImplementedError) as exc:
        raise ImageError(f"the image could not be decoded (truncated or corrupt?): {exc}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16-bit and 32-bit integer images are scaled, not clipped.

    Done in the image's own integer width through a lookup table (and float
    images in float32): a 40 MP 16-bit image costs its 8-bit result, not
    float64 copies of itself.
    """
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT_MODES:
        return Image.fromarray(_integer_to_uint8(np.asarray(img)), "L").convert("RGB")
    if img.mode == "F":
        arr = np.array(img, dtype=np.float32)
        finite = np.isfinite(arr)
        low = float(arr[finite].min()) if finite.any() else 0.0
        high = float(arr[finite].max()) if finite.any() else 0.0
        arr[~finite] = low
        arr -= low
        arr *= 255.0 / (high - low) if high > low else 0.0
        arr += 0.5
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _integer_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Gray levels of a 16-bit (or 32-bit "I") image -> uint8: 0..65535 scaled, or 0..255 kept."""
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    top = int(arr.max(initial=0))
    if top <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    if arr.dtype != np.uint16:
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return _SIXTEEN_TO_EIGHT[arr]


def preprocess(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB image -> float32 array (1, 3, H, W), resized and normalised as Remover does.

    ``size`` is (height, width) of the model input.
    """
    height, width = size
    resized = img.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.array(resized, dtype=np.float32)
    arr /= 255
    arr -= np.array(MEAN)
    arr /= np.array(STD)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))[None]


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation with align_corners=True."""
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
    src = np.arange(n_out, dtype=np.float32) * scale
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = (src - low).astype(np.float32)
    return low, high, frac


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float mask to ``size`` = (height, width), bilinear, align_corners=True.

    Matches ``F.interpolate(..., mode="bilinear", align_corners=True)`` to float
    rounding, done separably: first along the width, then along the height.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    height, width = size
    x_low, x_high, x_frac = _linear_taps(mask.shape[1], width)
    y_low, y_high, y_frac = _linear_taps(mask.shape[0], height)
    rows = mask[:, x_low] * (1 - x_frac) + mask[:, x_high] * x_frac
    y_frac = y_frac[:, None]
    out = np.empty((height, width), dtype=np.float32)

    def fill(start: int, stop: int) -> None:  # the same float32 operations, a block of rows at a time
        block = out[start:stop]
        np.take(rows, y_low[start:stop], axis=0, out=block)
        block *= 1 - y_frac[start:stop]
        below = np.take(rows, y_high[start:stop], axis=0)
        below *= y_frac[start:stop]
        block += below

    in_row_blocks(fill, height)
    return out


_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rows")
ROW_BLOCK = 128


def in_row_blocks(function, height: int) -> None:
    """Call ``function(start, stop)`` over blocks of rows, on threads (numpy releases the GIL)."""
    blocks = [(start, min(start + ROW_BLOCK, height)) for start in range(0, height, ROW_BLOCK)]
    if len(blocks) == 1:
        function(*blocks[0])
        return
    for future in [_pool.submit(function, start, stop) for start, stop in blocks]:
        future.result()


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Float mask in [0, 1] -> uint8 the way Remover writes alpha (truncation)."""
    return (np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8)
