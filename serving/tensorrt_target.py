"""Can this machine run a TensorRT engine built for the manifest's target?

A TensorRT plan is tied to a GPU architecture and a TensorRT version. The
build records its target in the manifest; the server compares it with this
machine *before* deserialising, so a mismatch is a logged skip (and ``auto``
falls back to the next backend) instead of a crash or a silent slow path.

Rules (TensorRT's engine-compatibility documentation):

- compute capability: equal, unless built hardware-compatible (``ampere+``:
  any GPU of compute capability 8.0 or newer);
- TensorRT version: equal, unless built version-compatible: then any later
  runtime of the same major version, or of the next major version (TensorRT
  documents 8 -> 10 and 10 -> 11 as supported), never an older one;
- the lean runtime (``tensorrt_lean``) loads version-compatible plans only.
"""

from __future__ import annotations

from dataclasses import dataclass

HARDWARE_LEVELS = ("none", "ampere+")
AMPERE = (8, 0)
# Later major versions TensorRT documents as able to run a version-compatible plan.
CROSS_MAJOR = {8: (10,), 10: (11,)}


@dataclass(frozen=True)
class Machine:
    """What the serving machine offers."""

    runtime: str  # "tensorrt_lean" or "tensorrt"
    tensorrt_version: str
    compute_capability: tuple[int, int] | None  # None: no CUDA GPU
    gpu_name: str = ""


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def parse_compute_capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def format_cc(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def incompatibility(target: dict, machine: Machine) -> str | None:
    """Why ``machine`` cannot run an engine built for ``target``; None if it can."""
    if machine.compute_capability is None:
        return "no CUDA GPU is visible"
    try:
        built_cc = parse_compute_capability(target["compute_capability"])
        built_trt = parse_version(target["tensorrt_version"])
        level = target.get("hardware_compatibility", "none")
        version_compatible = bool(target.get("version_compatible", False))
    except (KeyError, TypeError, ValueError) as exc:
        return f"the manifest's TensorRT target is incomplete or malformed ({exc})"
    if level not in HARDWARE_LEVELS:
        return f"unknown hardware compatibility level {level!r} in the manifest"

    here = machine.compute_capability
    if level == "ampere+":
        if here < AMPERE:
            return (
                f"engine is hardware-compatible for Ampere and newer (compute capability >= 8.0); "
                f"this GPU ({machine.gpu_name or 'unnamed'}) is {format_cc(here)}"
            )
    elif here != built_cc:
        return (
            f"engine was built for compute capability {format_cc(built_cc)} "
            f"({target.get('gpu_name', 'unknown GPU')}); this GPU ({machine.gpu_name or 'unnamed'}) is "
            f"{format_cc(here)}: rebuild on this GPU or with --hardware-compatible"
        )

    try:
        runtime_trt = parse_version(machine.tensorrt_version)
    except ValueError:
        return f"cannot read this machine's TensorRT version {machine.tensorrt_version!r}"
    built_text = ".".join(map(str, built_trt))
    here_text = ".".join(map(str, runtime_trt))
    if not version_compatible:
        if machine.runtime == "tensorrt_lean":
            return "engine is not version-compatible, and the lean runtime only loads version-compatible engines"
        if runtime_trt[:3] != built_trt[:3]:
            return f"engine was built with TensorRT {built_text} (not version-compatible); this runtime is {here_text}"
        return None
    if runtime_trt < built_trt:
        return f"engine was built with TensorRT {built_text}; this runtime ({here_text}) is older"
    if runtime_trt[0] != built_trt[0] and runtime_trt[0] not in CROSS_MAJOR.get(built_trt[0], ()):
        return f"a TensorRT {built_trt[0]} engine cannot run on a TensorRT {runtime_trt[0]} runtime"
    return None
