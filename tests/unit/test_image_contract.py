"""The image contract: decoding, Remover-exact preprocessing, mask upsampling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.imaging.contract import ImageError, decode_image, mask_to_uint8, preprocess, upsample_mask

torch = pytest.importorskip("torch")


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def test_exif_orientation_is_applied():
    img = gradient(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (40, 60)


@pytest.mark.parametrize(
    "mode",
    ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "YCbCr"],
)
def test_any_mode_becomes_rgb(mode):
    source = gradient(32, 24)
    if mode == "I;16":
        arr = (np.asarray(source.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
        fmt = "PNG"
    else:
        img = source.convert(mode)
        fmt = {"CMYK": "JPEG", "YCbCr": "JPEG"}.get(mode, "PNG")
    decoded = decode_image(encode(img, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == (32, 24)
    if mode == "I;16":
        # 16-bit data is scaled to 8 bits, not clipped to white.
        expected = np.asarray(source.convert("L"))
        assert np.abs(np.asarray(decoded)[..., 0].astype(int) - expected).max() <= 1


def test_palette_with_transparency_decodes():
    img = gradient(20, 20).convert("P")
    img.info["transparency"] = 0
    decoded = decode_image(encode(img, "PNG", transparency=0))
    assert decoded.mode == "RGB"


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue())
    assert decoded.getpixel((8, 8))[0] > 200  # red, the first frame


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no image data"),
        (b"definitely not an image", "not an image"),
    ],
)
def test_bad_bytes_are_refused(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["DDS", "PPM", "ICO"])
def test_formats_outside_the_documented_list_never_reach_a_decoder(fmt):
    """Pillow decodes these, but only the documented formats are opened (a DDS once escaped as a 500)."""
    from serving.imaging.contract import UnsupportedImageError

    with pytest.raises(UnsupportedImageError, match="not an image in a supported format"):
        decode_image(encode(gradient(16, 16), fmt))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_refused(fmt):
    data = encode(gradient(200, 200), fmt)
    with pytest.raises(ImageError, match="could not be decoded|not an image"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_refuses_before_decoding():
    # A 10000 x 10000 PNG of one colour is tiny on the wire: a decompression bomb.
    bomb = encode(Image.new("L", (10000, 10000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(bomb, max_pixels=50_000_000)


def test_an_image_past_pillows_own_limit_quotes_ours():
    """Pillow refuses past 2 x its MAX_IMAGE_PIXELS before our check runs; the answer still names our limit."""
    huge = encode(Image.new("1", (20000, 10000)), "PNG", optimize=True)  # 200 MP, over Pillow's 179 MP
    with pytest.raises(ImageError, match=r"^image is 200000000 pixels, over the limit of 50000000$"):
        decode_image(huge, max_pixels=50_000_000)


def remover_transform(size):
    """transparent-background's own static-mode transform, as Remover composes it."""
    import torchvision.transforms as transforms
    from transparent_background.utils import normalize, static_resize, tonumpy, totensor

    return transforms.Compose(
        [
            static_resize(list(size)),
            tonumpy(),
            normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            totensor(),
        ]
    )


@pytest.mark.parametrize("source_size", [(640, 480), (16, 16), (4000, 300), (384, 384)])
def test_preprocess_is_bit_identical_to_remover(source_size):
    img = gradient(*source_size)
    ours = preprocess(img, (384, 384))
    theirs = remover_transform((384, 384))(img).unsqueeze(0).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == (1, 3, 384, 384)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("target", [(480, 640), (16, 16), (300, 4000), (384, 384), (1, 7), (7, 1)])
def test_upsample_matches_torch_align_corners(target):
    rng = np.random.default_rng(0)
    mask = rng.random((384, 384), dtype=np.float32)
    ours = upsample_mask(mask, target)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(mask)[None, None], target, mode="bilinear", align_corners=True
    )[0, 0].numpy()
    assert ours.shape == target
    assert np.abs(ours - theirs).max() < 1e-6


def test_mask_to_uint8_truncates_like_remover():
    mask = np.array([[0.0, 0.5, 0.999, 1.0, 1.2, -0.1]], dtype=np.float32)
    assert mask_to_uint8(mask).tolist() == [[0, 127, 254, 255, 255, 0]]


def traced_peak_bytes(function) -> int:
    """Peak of numpy's (and Python's) allocations while ``function`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sixteen_bit_image_costs_its_8_bit_result_not_float64_copies():
    # An attack found a 89 KB 16-bit PNG of 40 MP costing +1 GB in the worker (float64 copies).
    width, height = 4000, 3000
    ramp = (np.arange(width, dtype=np.uint32) * 65535 // (width - 1)).astype(np.uint16)
    data = encode(Image.fromarray(np.tile(ramp, (height, 1))), "PNG")
    decoded = {}
    peak = traced_peak_bytes(lambda: decoded.setdefault("img", decode_image(data)))
    img = decoded["img"]
    assert img.mode == "RGB"
    assert img.size == (width, height)
    row = np.asarray(img)[0, :, 0].astype(int)
    assert row[0] == 0
    assert row[-1] == 255
    assert np.all(np.diff(row) >= 0)  # scaled, not clipped
    assert peak < 6 * width * height  # the float64 path peaked at 24 bytes per pixel


def test_refine_over_its_pixel_budget_works_at_a_reduced_size():
    from serving.imaging.cutout import compose
    from serving.imaging.refine import estimate_foreground
    from serving.params import CutoutParams

    width, height = 2400, 1600
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    alpha = np.clip((xx - width / 2) / 200 + 0.5, 0, 1).astype(np.float32)  # a soft vertical edge
    rgb = np.dstack([(xx / width * 255), (yy / height * 255), np.full_like(xx, 90)]).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    params = CutoutParams(refine=True)
    full = estimate_foreground(rgb, alpha)
    capped = {}
    peak = traced_peak_bytes(lambda: capped.setdefault("out", compose(img, alpha, params, refine_max_pixels=400_000)))
    out = np.asarray(capped["out"])
    alpha8 = out[..., 3]
    edge = (alpha8 > 0) & (alpha8 < 255)
    assert np.array_equal(out[alpha8 == 255][:, :3], rgb[alpha8 == 255])  # opaque pixels keep their colour
    assert np.abs(out[edge][:, :3].astype(int) - full[edge].astype(int)).mean() < 4  # close to full-size refine
    assert peak < 32 * width * height  # at full size this compose peaked at 96 bytes per pixel


def test_an_image_at_the_model_size_reaches_the_model_unresized():
    """The mobile path uploads the photo already at the model's input size: no second resize on the server."""
    img = gradient(384, 384)
    expected = np.array(img, dtype=np.float32)  # the photo's own pixels, normalised as Remover does
    expected /= 255
    expected -= np.array([0.485, 0.456, 0.406])
    expected /= np.array([0.229, 0.224, 0.225])
    assert np.array_equal(preprocess(img, (384, 384))[0], expected.transpose(2, 0, 1))
    assert not np.array_equal(preprocess(gradient(385, 384), (384, 384))[0], expected.transpose(2, 0, 1))


def test_a_mask_at_its_own_size_is_not_resampled():
    mask = np.random.default_rng(3).random((384, 384), dtype=np.float32)
    assert np.array_equal(upsample_mask(mask, (384, 384)), mask)
    assert np.array_equal(mask_to_uint8(upsample_mask(mask, (384, 384))), mask_to_uint8(mask))
