"""remove.bg's options applied to a cutout (serving/imaging/removebg.py), on a known mask."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from serving.imaging.contract import ImageError
from serving.imaging.cutout import cutout_pixels, encode
from serving.imaging.removebg import NoForegroundError, fit_megapixels, removebg_result
from serving.params import CutoutParams
from serving.removebg_params import parse_removebg_params

WIDTH, HEIGHT = 200, 100
TOP, LEFT, SUB_W, SUB_H = 20, 50, 80, 40  # the subject: the mask is 1 there, 0 elsewhere


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    mask[TOP : TOP + SUB_H, LEFT : LEFT + SUB_W] = 1.0
    return mask


def result(image, mask, background=None, **raw):
    return removebg_result(image, mask, parse_removebg_params(raw), 12_000_000, background)


def opened(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def test_without_options_the_bytes_are_our_routes(image, mask):
    ours = encode(cutout_pixels(image, mask, CutoutParams())[0], "png")
    out = result(image, mask, format="png")
    assert out.body == ours
    assert out.media_type == "image/png"
    assert (out.width, out.height) == (WIDTH, HEIGHT)
    assert (out.foreground.top, out.foreground.left, out.foreground.width, out.foreground.height) == (
        TOP,
        LEFT,
        SUB_W,
        SUB_H,
    )
    alpha = encode(cutout_pixels(image, mask, CutoutParams(output="mask"))[0], "png")
    assert result(image, mask, format="png", channels="alpha").body == alpha


def test_auto_format_is_png_with_transparency_and_jpeg_without(image, mask):
    assert result(image, mask).media_type == "image/png"
    flat = result(image, mask, bg_color="ff0000")
    assert flat.media_type == "image/jpeg"
    assert opened(flat.body).mode == "RGB"
    assert result(image, mask, bg_color="ff000080").media_type == "image/png"  # a see-through colour keeps alpha


def test_crop_cuts_to_the_subject_and_margins_are_clamped(image, mask):
    out = result(image, mask, crop=True, format="png")
    cropped = np.asarray(opened(out.body))
    assert cropped.shape == (SUB_H, SUB_W, 4)
    assert (cropped[..., 3] == 255).all()
    assert np.array_equal(cropped[..., :3], np.asarray(image)[TOP : TOP + SUB_H, LEFT : LEFT + SUB_W])
    margin = result(image, mask, crop=True, crop_margin="10px 25%", format="png")
    assert (margin.width, margin.height) == (SUB_W + 2 * 20, SUB_H + 2 * 10)
    assert (margin.foreground.top, margin.foreground.left) == (10, 20)
    clamped = result(image, mask, crop=True, crop_margin="900px", format="png")  # at most 50% of the subject
    assert (clamped.width, clamped.height) == (SUB_W * 2, SUB_H * 2)
    wide = np.asarray(opened(clamped.body))
    assert (wide[: SUB_H // 2, :, 3] == 0).all()  # beyond the image: transparent


def test_roi_removes_what_lies_outside(image, mask):
    out = result(image, mask, roi=f"0px 0px {LEFT + 20}px 100%", format="png")
    alpha = np.asarray(opened(out.body))[..., 3]
    assert alpha[:, LEFT + 20 :].max() == 0
    assert alpha[TOP : TOP + SUB_H, LEFT : LEFT + 20].min() == 255
    assert out.foreground.width == 20
    with pytest.raises(NoForegroundError):
        result(image, mask, roi="0px 0px 10px 10px")
    with pytest.raises(ImageError, match="roi selects no pixels"):
        result(image, mask, roi="50% 0% 40% 100%")


def test_scale_and_position_move_the_subject_on_the_canvas(image, mask):
    centred = result(image, mask, scale="100%", format="png")  # as large as fits, centred
    box = centred.foreground
    assert (centred.width, centred.height) == (WIDTH, HEIGHT)
    assert box.height == HEIGHT
    assert abs(box.width - SUB_W * HEIGHT / SUB_H) <= 1
    assert abs(box.left - (WIDTH - box.width) / 2) <= 1
    corner = result(image, mask, position="0%", format="png")  # original size, top left
    assert (corner.foreground.top, corner.foreground.left, corner.foreground.width) == (0, 0, SUB_W)
    end = result(image, mask, position="100% 100%", format="png")
    assert (end.foreground.top + SUB_H, end.foreground.left + SUB_W) == (HEIGHT, WIDTH)


def test_background_colour_and_image(image, mask):
    red = np.asarray(opened(result(image, mask, bg_color="red", format="png").body))
    assert tuple(red[0, 0]) == (255, 0, 0, 255)
    assert np.array_equal(red[TOP, LEFT, :3], np.asarray(image)[TOP, LEFT])
    backdrop = Image.new("RGB", (50, 50), (0, 0, 255))
    blue = np.asarray(opened(result(image, mask, background=backdrop, format="png").body))
    assert blue.shape == (HEIGHT, WIDTH, 4)
    assert tuple(blue[0, 0]) == (0, 0, 255, 255)  # scaled to cover the canvas


def test_jpeg_zip_webp_and_alpha_channel(image, mask):
    jpeg = opened(result(image, mask, format="jpg").body)
    assert jpeg.format == "JPEG"
    assert np.asarray(jpeg)[0, 0].min() > 240  # no transparency: white
    archive = zipfile.ZipFile(io.BytesIO(result(image, mask, format="zip").body))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    alpha = np.asarray(Image.open(archive.open("alpha.png")))
    assert alpha.shape == (HEIGHT, WIDTH)
    assert alpha[TOP, LEFT] == 255
    assert alpha[0, 0] == 0
    webp = opened(result(image, mask, format="webp").body)
    assert webp.format == "WEBP"
    assert webp.mode == "RGBA"
    matte = opened(result(image, mask, channels="alpha", format="png").body)
    assert matte.mode == "L"
    assert matte.size == (WIDTH, HEIGHT)


def test_sizes_fit_the_megapixels():
    big = Image.new("RGB", (4000, 3000))
    width, height = fit_megapixels(big, 0.25).size
    assert width * height <= 250_000
    assert (width, height) == (577, 433)  # 0.25 MP, aspect kept
    assert fit_megapixels(big, 25.0) is big
