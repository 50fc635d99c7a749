"""Can this machine run a TensorRT engine built for the manifest's target?

A TensorRT plan is tied to a GPU and a TensorRT version. The build records its
target in the manifest; the server compares it with this machine *before*
deserialising, so a mismatch is a logged skip (and ``auto`` falls back to the
next backend) instead of a crash or a silent slow path.

Rules (TensorRT's engine-compatibility documentation):

- hardware: with compatibility level ``none`` only the GPU model the engine was
  built on (same name and compute capability); ``same-compute-capability``: any
  GPU of that compute capability; ``ampere+``: any GPU of compute capability 8.0
  or newer;
- version, not version-compatible: exactly the TensorRT version that built it
  (all four parts), and never the lean runtime, which loads only
  version-compatible plans;
- version-compatible with the lean runtime excluded from the plan (this
  project's builds): a lean runtime of exactly the same version, since the plan
  relies on the runtime it runs under;
- version-compatible with the lean runtime embedded: a runtime of the same
  version or later, within the same major version or the next one (TensorRT
  documents 10 -> 11), never an older one.
"""

from __future__ import annotations

from dataclasses import dataclass

HARDWARE_LEVELS = ("none", "same-compute-capability", "ampere+")
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


def target_problem(target: dict, machine: Machine) -> str | None:
    """Why ``machine`` cannot run an engine built for ``target``; None if it can."""
    if machine.compute_capability is None:
        return "no CUDA GPU is visible"
    try:
        built_cc = parse_compute_capability(target["compute_capability"])
        built_trt = parse_version(target["tensorrt_version"])
        level = target.get("hardware_compatibility", "none")
        version_compatible = bool(target.get("version_compatible", False))
        # Manifests from before this field: those plans were built with the lean runtime excluded.
        lean_excluded = bool(target.get("lean_runtime_excluded", True))
    except (KeyError, TypeError, ValueError) as exc:
        return f"the manifest's TensorRT target is incomplete or malformed ({exc})"
    if level not in HARDWARE_LEVELS:
        return f"unknown hardware compatibility level {level!r} in the manifest"
    problem = hardware_problem(target, level, built_cc, machine)
    if problem:
        return problem
    try:
        runtime_trt = parse_version(machine.tensorrt_version)
    except ValueError:
        return f"cannot read this machine's TensorRT version {machine.tensorrt_version!r}"
    return version_problem(built_trt, runtime_trt, version_compatible, lean_excluded, machine.runtime)


def hardware_problem(target: dict, level: str, built_cc: tuple[int, int], machine: Machine) -> str | None:
    here, gpu = machine.compute_capability, machine.gpu_name or "unnamed"
    if here is None:
        return f"this machine's GPU ({gpu}) reports no compute capability"
    if level == "ampere+":
        if here < AMPERE:
            return (
                f"engine is hardware-compatible for Ampere and newer (compute capability >= 8.0); "
                f"this GPU ({gpu}) is {format_cc(here)}"
            )
        return None
    if here != built_cc:
        return (
            f"engine was built for compute capability {format_cc(built_cc)} "
            f"({target.get('gpu_name', 'unknown GPU')}); this GPU ({gpu}) is {format_cc(here)}: "
            "rebuild on this GPU or with --hardware-compatible"
        )
    built_gpu = str(target.get("gpu_name", ""))
    if level == "none" and built_gpu and machine.gpu_name and built_gpu != machine.gpu_name:
        return (
            f"engine was built for the {built_gpu} (hardware compatibility none: that GPU model only); "
            f"this GPU is a {machine.gpu_name}: rebuild on it or with --hardware-compatible"
        )
    return None


def version_problem(
    built: tuple[int, ...], here: tuple[int, ...], version_compatible: bool, lean_excluded: bool, runtime: str
) -> str | None:
    built_text, here_text = ".".join(map(str, built)), ".".join(map(str, here))
    if not version_compatible:
        if runtime == "tensorrt_lean":
            return "engine is not version-compatible, and the lean runtime only loads version-compatible engines"
        if _four(here) != _four(built):
            return f"engine was built with TensorRT {built_text} (not version-compatible); this runtime is {here_text}"
        return None
    if lean_excluded:
        if runtime != "tensorrt_lean":  # the full runtime opens such a plan only through load_runtime
            return (
                f"engine is version-compatible with the lean runtime excluded: it runs on the lean runtime of "
                f"TensorRT {built_text} (install tensorrt-lean-cu12=={built_text}, constraints/cuda12.txt), "
                f"which {runtime} {here_text} here is not"
            )
        if _four(here) != _four(built):
            return (
                f"engine is version-compatible with the lean runtime excluded, so it needs a lean runtime of "
                f"TensorRT {built_text}; this runtime is {here_text} (pin both in constraints/cuda12.txt)"
            )
        return None
    if here < built:
        return f"engine was built with TensorRT {built_text}; this runtime ({here_text}) is older"
    if here[0] not in (built[0], *CROSS_MAJOR.get(built[0], ())):
        return f"a TensorRT {built[0]} engine cannot run on a TensorRT {here[0]} runtime"
    return None


def _four(version: tuple[int, ...]) -> tuple[int, ...]:
    """The four version parts TensorRT compares (missing ones count as 0)."""
    return (tuple(version) + (0, 0, 0, 0))[:4]
