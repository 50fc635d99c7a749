"""remove.bg's parameters as its clients send them (serving/removebg_params.py)."""

from __future__ import annotations

import pytest

from serving.params import ParamError
from serving.removebg_params import RemoveBgParams, parse_color, parse_removebg_params


def test_defaults_are_remove_bgs():
    params = parse_removebg_params({})
    assert (params.size, params.megapixels, params.format, params.channels, params.type) == (
        "preview",
        0.25,
        "auto",
        "rgba",
        "auto",
    )
    assert not params.crop
    assert params.scale is None
    assert params.position is None
    assert params.roi is None


@pytest.mark.parametrize(
    ("size", "name", "megapixels"),
    [
        ("preview", "preview", 0.25),
        ("small", "preview", 0.25),
        ("regular", "preview", 0.25),
        ("medium", "medium", 1.5),
        ("hd", "hd", 4.0),
        ("full", "full", 25.0),
        ("4k", "full", 25.0),
        ("auto", "auto", 25.0),
        ("50MP", "50mp", 50.0),
    ],
)
def test_sizes_and_their_old_names(size, name, megapixels):
    params = parse_removebg_params({"size": size})
    assert (params.size, params.megapixels) == (name, megapixels)


@pytest.mark.parametrize("empty", ["", "  ", None, "undefined", "null"])
def test_fields_a_client_was_not_given_arrive_empty_and_mean_the_default(empty):
    assert parse_removebg_params({"size": empty, "crop": empty, "scale": empty, "bg_color": empty}) == RemoveBgParams()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), ("true", True), ("TRUE", True), (False, False), ("false", False), ("0", False), ("1", True)],
)
def test_booleans_as_json_or_as_text(value, expected):
    params = parse_removebg_params({"crop": value, "add_shadow": value, "semitransparency": value})
    assert params.crop is params.add_shadow is params.semitransparency is expected


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("81d4fa", (0x81, 0xD4, 0xFA, 255)),
        ("#fff", (255, 255, 255, 255)),
        ("81d4fa77", (0x81, 0xD4, 0xFA, 0x77)),
        ("f008", (255, 0, 0, 0x88)),
        ("green", (0, 128, 0, 255)),
        ("RED", (255, 0, 0, 255)),
    ],
)
def test_colours_hex_with_alpha_and_names(text, rgba):
    assert parse_color(text) == rgba


def test_margins_positions_scale_and_roi():
    params = parse_removebg_params(
        {"crop": "true", "crop_margin": "10px 5%", "scale": "50%", "roi": "10% 0px 90% 300px"}
    )
    assert params.crop_margin == ((10.0, "px"), (5.0, "%"), (10.0, "px"), (5.0, "%"))
    assert params.scale == 0.5
    assert params.position == (0.5, 0.5)  # scale implies position=center
    assert params.roi == ((10.0, "%"), (0.0, "px"), (90.0, "%"), (300.0, "px"))
    assert parse_removebg_params({"crop_margin": "30"}).crop_margin == ((30.0, "px"),) * 4
    assert parse_removebg_params({"crop_margin": "1px 2px 3px 4px"}).crop_margin[3] == (4.0, "px")
    assert parse_removebg_params({"position": "25% 75%"}).position == (0.25, 0.75)
    assert parse_removebg_params({"position": "0%"}).position == (0.0, 0.0)
    assert parse_removebg_params({"scale": "original", "position": "original"}).position is None
    assert parse_removebg_params({"scale": "80%", "position": "original"}).position is None


def test_type_and_ignored_newer_fields_are_reported():
    params = parse_removebg_params({"type": "car", "type_level": "2", "shadow_type": "drop", "image_filename": ""})
    assert (params.type, params.type_level, params.ignored) == ("car", "2", ("shadow_type",))


def test_the_worker_gets_the_same_parameters_back_from_json():
    import json

    params = parse_removebg_params(
        {"crop": True, "crop_margin": "5%", "roi": "0 0 50% 50%", "bg_color": "fff", "position": "center"},
        bg_image=None,
    )
    assert RemoveBgParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"size": "huge"}, "'size' must be one of"),
        ({"format": "gif"}, "'format' must be one of"),
        ({"channels": "rgb"}, "'channels' must be one of"),
        ({"type": "cat"}, "'type' must be one of"),
        ({"crop": "maybe"}, "'crop' must be true or false"),
        ({"crop_margin": "1px 2px 3px"}, "1, 2 or 4 lengths"),
        ({"crop_margin": "-5px"}, "lengths like 30px"),
        ({"scale": "5%"}, "from 10% to 100%"),
        ({"scale": "150%"}, "from 10% to 100%"),
        ({"position": "left"}, "percentage"),
        ({"roi": "0 0 10"}, "four coordinates"),
        ({"bg_color": "notacolour"}, "hex colour"),
        ({"bg_color": "12345"}, "hex colour"),
        ({"bg_color": {"r": 1}}, "must be a string"),
        ({"sharpen": "1"}, "unknown parameter 'sharpen'"),
    ],
)
def test_bad_values_name_the_parameter(raw, words):
    with pytest.raises(ParamError, match=words):
        parse_removebg_params(raw)


def test_one_background_only():
    with pytest.raises(ParamError, match="one background"):
        parse_removebg_params({"bg_color": "fff"}, bg_image="0" * 32)
