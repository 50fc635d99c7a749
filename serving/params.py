"""Request parameters of ``POST /v1/remove-background``: parsing and validation.

Parameters arrive as query string, form fields or JSON fields; they are all
strings (or JSON scalars) here, validated once, in the HTTP process, before a
request is queued for the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from serving.errors import UserError

CUTOUT_PATH = "/v1/remove-background"
OUTPUTS = ("rgba", "mask", "rgb")
FORMATS = ("png", "webp", "jpeg")
FORMAT_ALIASES = {"jpg": "jpeg"}
MAX_SIZE_LIMIT = 16384
_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ParamError(UserError, ValueError):
    """A parameter the client got wrong; the message names it."""


@dataclass(frozen=True)
class CutoutParams:
    output: str = "rgba"
    format: str = "png"
    bg_color: tuple[int, int, int] = (255, 255, 255)
    threshold: float | None = None
    reverse: bool = False
    max_size: int | None = None
    refine: bool = False
    quality: int | None = None  # webp and jpeg; webp without it is lossless

    @property
    def media_type(self) -> str:
        return f"image/{self.format}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CutoutParams:
        data = dict(data)
        data["bg_color"] = tuple(data["bg_color"])
        return cls(**data)


def as_text(name: str, value: Any) -> str:
    """A scalar parameter as stripped text (booleans as true/false); anything else is a ParamError."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    raise ParamError(f"parameter '{name}' must be a string or a number, got {type(value).__name__}")


def as_bool(name: str, value: Any) -> bool:
    text = as_text(name, value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParamError(f"parameter '{name}' must be true or false, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str:
    text = as_text(name, value).lower()
    text = (aliases or {}).get(text, text)
    if text not in choices:
        raise ParamError(f"parameter '{name}' must be one of {', '.join(choices)}; got {value!r}")
    return text


def _color(value: Any) -> tuple[int, int, int]:
    text = as_text("bg_color", value)
    match = _HEX_COLOR.match(text)
    if not match:
        raise ParamError(f"parameter 'bg_color' must be a hex colour like #ffffff or #fff; got {value!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def _threshold(value: Any) -> float:
    try:
        number = float(as_text("threshold", value))
    except ValueError:
        raise ParamError(f"parameter 'threshold' must be a number between 0 and 1; got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ParamError(f"parameter 'threshold' must be between 0 and 1; got {number}")
    return number


def _quality(value: Any) -> int:
    text = as_text("quality", value)
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not 1 <= int(text) <= 100:
        raise ParamError(f"parameter 'quality' must be a whole number from 1 to 100; got {value!r}")
    return int(text)


def _max_size(value: Any) -> int:
    text = as_text("max_size", value)
    # ASCII digits only ('²'.isdigit() is true), and few of them before int() sees them.
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_SIZE_LIMIT:
        raise ParamError(f"parameter 'max_size' must be a whole number from 1 to {MAX_SIZE_LIMIT}; got {value!r}")
    return int(text)


_PARSERS = {
    "output": lambda v: _choice("output", v, OUTPUTS),
    "format": lambda v: _choice("format", v, FORMATS, FORMAT_ALIASES),
    "bg_color": _color,
    "threshold": _threshold,
    "reverse": lambda v: as_bool("reverse", v),
    "max_size": _max_size,
    "refine": lambda v: as_bool("refine", v),
    "quality": _quality,
}
PARAM_NAMES = tuple(_PARSERS)


def parse_params(raw: Mapping[str, Any]) -> CutoutParams:
    """Validate the client's parameters; unknown names and bad values raise ParamError."""
    unknown = sorted(set(raw) - set(_PARSERS))
    if unknown:
        raise ParamError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"known: {', '.join(PARAM_NAMES)}"
        )
    values: dict[str, Any] = {name: _PARSERS[name](value) for name, value in raw.items() if value is not None}
    params = CutoutParams(**values)
    if params.format == "jpeg" and params.output == "rgba":
        raise ParamError("format=jpeg cannot carry transparency: use output=rgb or output=mask, or format=png/webp")
    if params.format == "png" and params.quality is not None:
        raise ParamError("parameter 'quality' applies to format=webp and format=jpeg; PNG is always lossless")
    return params
