"""Parameters of ``POST /v1.0/removebg`` (remove.bg's API): parsing and validation.

remove.bg's clients send form fields, multipart fields or JSON values; a
boolean arrives as a JSON boolean or as the text ``true``/``false``, and a
field a client was not given arrives empty (or, from some JavaScript clients,
as the text ``undefined``). Empty means "not given" here. Values are checked
in the HTTP process, before a request is queued for the model; sizes given
in % are resolved in the worker, against the decoded image
(``serving.imaging.removebg``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from PIL import ImageColor

from serving.params import ParamError, as_bool, as_text

# Megapixels of the result per ``size`` (remove.bg's limits; the old names map to the new ones).
SIZE_MEGAPIXELS = {
    "preview": 0.25,
    "small": 0.25,
    "regular": 0.25,
    "medium": 1.5,
    "hd": 4.0,
    "full": 25.0,
    "4k": 25.0,
    "auto": 25.0,
    "50mp": 50.0,
}
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation")
TYPE_LEVELS = ("none", "1", "2", "latest")
FORMATS = ("auto", "png", "jpg", "webp", "zip")
CHANNELS = ("rgba", "alpha")
# remove.bg parameters of newer API versions this server accepts and ignores (reported in X-Ignored-Parameters).
IGNORED = ("shadow_type", "shadow_opacity", "image_filename")
SOURCE_FIELDS = ("image_file", "image_file_b64", "image_url")
BACKGROUND_FIELDS = ("bg_color", "bg_image_url", "bg_image_file")
NOT_GIVEN = ("", "undefined", "null")
MAX_MARGIN_PX = 500  # remove.bg: a crop margin is at most 500 px and 50% of the subject on each side
MAX_MARGIN_SHARE = 0.5

_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
_HEX = re.compile(r"^#?([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")

Length = tuple[float, str]  # (value, "px" or "%")


@dataclass(frozen=True)
class RemoveBgParams:
    megapixels: float = SIZE_MEGAPIXELS["preview"]
    size: str = "preview"
    type: str = "auto"
    type_level: str = "1"
    format: str = "auto"
    channels: str = "rgba"
    bg_color: tuple[int, int, int, int] | None = None
    crop: bool = False
    crop_margin: tuple[Length, Length, Length, Length] = ((0.0, "px"),) * 4  # top, right, bottom, left
    scale: float | None = None  # share of the canvas, 0.1 to 1; None: "original"
    position: tuple[float, float] | None = None  # horizontal, vertical share; None: "original"
    roi: tuple[Length, Length, Length, Length] | None = None  # x1, y1, x2, y2
    semitransparency: bool = True
    add_shadow: bool = False
    bg_image: str | None = None  # the hand-off id of the background image (bg_image_file or bg_image_url)
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemoveBgParams:
        def lengths(value):
            return None if value is None else tuple((float(v), str(u)) for v, u in value)

        data = dict(data)
        data["crop_margin"] = lengths(data["crop_margin"])
        data["roi"] = lengths(data["roi"])
        for name in ("bg_color", "position", "ignored"):
            data[name] = None if data[name] is None else tuple(data[name])
        return cls(**data)


def given(value: Any) -> bool:
    """False for what clients send for a field they were not given."""
    return value is not None and not (isinstance(value, str) and value.strip().lower() in NOT_GIVEN)


def _choice(name: str, value: Any, choices: tuple[str, ...] | Mapping[str, Any]) -> str:
    text = as_text(name, value).lower()
    if text == "jpeg" and name == "format":
        text = "jpg"
    if text not in choices:
        raise ParamError(f"parameter '{name}' must be one of {', '.join(choices)}; got {value!r}")
    return text


def _length(name: str, text: str) -> Length:
    match = _LENGTH.match(text.strip().lower())
    if not match or len(text) > 16:
        raise ParamError(f"parameter '{name}' takes lengths like 30px or 10%; got {text!r}")
    return float(match.group(1)), match.group(2) or "px"


def _percent(name: str, text: str, low: float, high: float) -> float:
    match = re.match(r"^(\d+(?:\.\d+)?)%$", text.strip())
    if not match or not low <= float(match.group(1)) <= high:
        raise ParamError(f"parameter '{name}' must be a percentage from {low:g}% to {high:g}%; got {text!r}")
    return float(match.group(1)) / 100


def parse_color(value: Any) -> tuple[int, int, int, int]:
    """A hex colour (rgb, rgba, rrggbb, rrggbbaa, with or without #) or a colour name -> RGBA."""
    text = as_text("bg_color", value)
    match = _HEX.match(text)
    if match:
        digits = match.group(1)
        if len(digits) in (3, 4):
            digits = "".join(c * 2 for c in digits)
        digits += "ff" if len(digits) == 6 else ""
        return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4, 6))  # type: ignore[return-value]
    if text.isalpha() and text.lower() in ImageColor.colormap:
        red, green, blue = ImageColor.getrgb(text.lower())[:3]
        return red, green, blue, 255
    raise ParamError(
        f"parameter 'bg_color' must be a hex colour (81d4fa, fff, 81d4fa77) or a colour name; got {text!r}"
    )


def _margin(value: Any) -> tuple[Length, Length, Length, Length]:
    parts = as_text("crop_margin", value).replace(",", " ").split()
    if len(parts) not in (1, 2, 4):
        raise ParamError(f"parameter 'crop_margin' takes 1, 2 or 4 lengths (e.g. 30px, 10%); got {value!r}")
    lengths = [_length("crop_margin", part) for part in parts]
    if len(lengths) == 1:
        lengths *= 4
    elif len(lengths) == 2:
        lengths *= 2
    return tuple(lengths)  # type: ignore[return-value]


def _scale(value: Any) -> float | None:
    text = as_text("scale", value).lower()
    return None if text == "original" else _percent("scale", text, 10, 100)


def _position(value: Any) -> tuple[float, float] | None:
    text = as_text("position", value).lower()
    if text == "original":
        return None
    if text == "center":
        return 0.5, 0.5
    parts = text.replace(",", " ").split()
    if len(parts) not in (1, 2):
        raise ParamError(f"parameter 'position' must be original, center, or one or two percentages; got {value!r}")
    shares = [_percent("position", part, 0, 100) for part in parts]
    return shares[0], shares[-1]


def _roi(value: Any) -> tuple[Length, Length, Length, Length]:
    parts = as_text("roi", value).replace(",", " ").split()
    if len(parts) != 4:
        raise ParamError(f"parameter 'roi' takes four coordinates 'x1 y1 x2 y2' (px or %); got {value!r}")
    return tuple(_length("roi", part) for part in parts)  # type: ignore[return-value]


_PARSERS = {
    "size": lambda v: _choice("size", v, SIZE_MEGAPIXELS),
    "type": lambda v: _choice("type", v, TYPES),
    "type_level": lambda v: _choice("type_level", v, TYPE_LEVELS),
    "format": lambda v: _choice("format", v, FORMATS),
    "channels": lambda v: _choice("channels", v, CHANNELS),
    "bg_color": parse_color,
    "crop": lambda v: as_bool("crop", v),
    "crop_margin": _margin,
    "scale": _scale,
    "position": _position,
    "roi": _roi,
    "semitransparency": lambda v: as_bool("semitransparency", v),
    "add_shadow": lambda v: as_bool("add_shadow", v),
}
PARAM_NAMES = tuple(_PARSERS)
KNOWN = (*PARAM_NAMES, *SOURCE_FIELDS, "bg_image_url", "bg_image_file", *IGNORED)


def parse_removebg_params(raw: Mapping[str, Any], bg_image: str | None = None) -> RemoveBgParams:
    """The client's parameters (sources and background images already taken out) -> RemoveBgParams."""
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise ParamError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"known: {', '.join(PARAM_NAMES)}"
        )
    values: dict[str, Any] = {
        name: _PARSERS[name](value) for name, value in raw.items() if name in _PARSERS and given(value)
    }
    if "size" in values:
        values["megapixels"] = SIZE_MEGAPIXELS[values["size"]]
        values["size"] = {"small": "preview", "regular": "preview", "4k": "full"}.get(values["size"], values["size"])
    if "scale" in values and "position" not in values and values["scale"] is not None:
        values["position"] = (0.5, 0.5)  # remove.bg: scaling the subject implies position=center
    ignored = tuple(sorted(name for name in IGNORED if given(raw.get(name))))
    if values.get("bg_color") is not None and bg_image is not None:
        raise ParamError("give one background: bg_color, bg_image_url or bg_image_file")
    return RemoveBgParams(**values, bg_image=bg_image, ignored=ignored)
