"""Compile the fp16-with-fp32-islands ONNX graph into a TensorRT engine, without torch.

The L4 route. Cloud Run's L4 runs a CUDA 12 driver (535 series), so the engine
comes from TensorRT's own CUDA 12 builder (``tensorrt-cu12``, pinned to the
version of the serving image's lean runtime in constraints/cuda12.txt): its
ONNX parser reads ``model.fp16.onnx`` (exported on the CPU with the rest of
the bundle), into a strongly typed network, so the engine has exactly the
graph's precisions: fp16 with explicit fp32 islands. The plan is
version-compatible with the lean runtime excluded (the serving image ships
that runtime, at the same version), TF32 is off so the fp32 islands keep
their 23-bit mantissas, the batch is dynamic (1..max_batch), profiling
verbosity is DETAILED (the inspector then reports every layer's types) and
the timing cache persists between builds.

``build`` compiles, then has the engine inspected and gated before it is
accepted (``pipeline.export.tensorrt_inspection``: its I/O must be the bundle's
contract and its convolutions must really run in fp16).

Everything except ``compile_engine`` runs without TensorRT and a GPU, and is
tested on CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import BuildError
from pipeline.export.tensorrt_inspection import (
    INPUT_NAME,
    describe_engine,
    fp16_problem,
    io_problem,
    precision_summary,
    size_evidence,
)


@dataclass(frozen=True)
class TensorRTOptions:
    hardware_compatible: bool = False
    optimization_level: int = 3
    workspace_gib: float = 4.0
    max_batch: int = 4
    opt_batch: int = 1
    timing_cache: Path | None = None


def builder_problem() -> str | None:
    """Why this machine cannot build a TensorRT engine, or None if it can (no torch involved)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the TensorRT builder (tensorrt-cu12) is not installed"
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # broken installs raise anything from OSError to RuntimeError
        return f"the TensorRT builder does not import: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        return "the installed tensorrt package has no builder or ONNX parser (a lean or dispatch runtime?)"
    from serving.backends import BackendUnavailableError
    from serving.backends.tensorrt import gpu_identity, import_cudart

    try:
        cc, why = gpu_identity(import_cudart())
    except BackendUnavailableError as exc:
        return str(exc)
    return None if cc else f"no CUDA GPU is visible ({why})"


def gpu_slug(name: str) -> str:
    """'NVIDIA L4' -> 'nvidia-l4' (for the engine's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def engine_file(gpu_name: str, hardware_compatible: bool) -> str:
    return f"model.{'ampere-plus' if hardware_compatible else gpu_slug(gpu_name)}.fp16.plan"


def default_timing_cache(cache_root: Path, gpu_name: str, tensorrt_version: str) -> Path:
    return cache_root / "tensorrt" / f"timing-{gpu_slug(gpu_name)}-trt{tensorrt_version}.cache"


def gpu_name() -> str:
    """The name of CUDA device 0 (from the CUDA runtime bindings, no torch)."""
    from serving.backends.tensorrt import gpu_identity, import_cudart

    cc, name = gpu_identity(import_cudart())
    if cc is None:
        raise BuildError(f"no CUDA GPU is visible ({name})")
    return name


def with_default_timing_cache(options: TensorRTOptions, cache_root: Path) -> TensorRTOptions:
    """``options`` with the per-GPU, per-TensorRT-version timing cache when none was given."""
    if options.timing_cache is not None:
        return options
    import tensorrt as trt

    return replace(options, timing_cache=default_timing_cache(cache_root, gpu_name(), trt.__version__))


def builder_settings(options: TensorRTOptions, size: tuple[int, int]) -> dict[str, Any]:
    """What the builder is asked for, as plain data (recorded in the manifest, applied by compile_engine)."""
    height, width = size
    if not 1 <= options.opt_batch <= options.max_batch:
        raise BuildError(f"TensorRT opt batch {options.opt_batch} is outside 1..{options.max_batch}")
    return {
        "network": "strongly typed (ONNX parser)",
        "set_flags": ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"],
        "cleared_flags": ["TF32"],
        "profiling_verbosity": "DETAILED",
        "hardware_compatibility_level": "AMPERE_PLUS" if options.hardware_compatible else "NONE",
        "builder_optimization_level": options.optimization_level,
        "workspace_bytes": int(options.workspace_gib * 2**30),
        "profile": {
            INPUT_NAME: {
                "min": [1, 3, height, width],
                "opt": [options.opt_batch, 3, height, width],
                "max": [options.max_batch, 3, height, width],
            }
        },
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
    }


def _flag(trt, enum_name: str, member: str):
    """A TensorRT enum member, or None where this TensorRT version does not have it."""
    return getattr(getattr(trt, enum_name), member, None)


def compile_engine(onnx_path: Path, settings: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Parse the ONNX graph and build the serialized plan; returns it and what was applied.

    Needs the TensorRT builder and a CUDA GPU (not yet run on a GPU: docs/status.md).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser = parse_onnx(trt, builder, logger, onnx_path)  # the parser owns the weights: kept
    if "VERSION_COMPATIBLE" in settings["set_flags"]:
        refuse_plugin_libraries(parser)
    config = builder.create_builder_config()
    applied: dict[str, Any] = {"set_flags": [], "cleared_flags": [], "missing_flags": []}
    for name in settings["set_flags"]:
        flag = _flag(trt, "BuilderFlag", name)
        if flag is None:
            raise BuildError(f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}")
        config.set_flag(flag)
        applied["set_flags"].append(name)
    for name in settings["cleared_flags"]:
        flag = _flag(trt, "BuilderFlag", name)
        if flag is None:  # nothing to clear: this version never uses it
            applied["missing_flags"].append(name)
            continue
        config.clear_flag(flag)
        applied["cleared_flags"].append(name)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.builder_optimization_level = settings["builder_optimization_level"]
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
    level = _flag(trt, "HardwareCompatibilityLevel", settings["hardware_compatibility_level"])
    if level is None:
        raise BuildError(
            f"this TensorRT has no hardware compatibility level {settings['hardware_compatibility_level']}"
        )
    config.hardware_compatibility_level = level
    profile = builder.create_optimization_profile()
    for name, shapes in settings["profile"].items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(settings["timing_cache"]) if settings.get("timing_cache") else None
    applied["timing_cache"] = use_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT failed to build the engine (see the TensorRT log lines above)")
    if cache_path is not None:
        save_timing_cache(config, cache_path)
    return bytes(plan), applied


def parse_onnx(trt, builder, logger, onnx_path: Path) -> tuple[Any, Any]:
    """(network, parser) of the ONNX graph; the parser must outlive the build (it holds the weights)."""
    strongly_typed = _flag(trt, "NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    # TensorRT 11 networks are always strongly typed (the flag is accepted and ignored);
    # on 10.x it must be asked for.
    network = builder.create_network(1 << int(strongly_typed) if strongly_typed is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads the external data file next to it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    return network, parser


def refuse_plugin_libraries(parser) -> None:
    """A version-compatible plan with the lean runtime excluded does not carry the plugin libraries the
    parser used (``NvOnnxParser.h``, getUsedVCPluginLibraries): they would have to ship and be loaded
    next to it. This model needs none; any is a BuildError naming them."""
    used = list(parser.get_used_vc_plugin_libraries() or [])
    if used:
        raise BuildError(
            "the ONNX graph needs TensorRT plugin libraries a version-compatible plan does not carry: "
            + ", ".join(str(library) for library in used)
        )


def warn(message: str) -> None:
    """One warning line on stderr (the build's console is stdout)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def use_timing_cache(config, cache_path: Path | None) -> str:
    """Give the builder the stored timing cache, or a fresh one; what was used ('stored' | 'fresh' | 'none').

    A cache from another GPU or TensorRT version (or a damaged file) costs one
    warning line and a fresh cache, never the build: ``set_timing_cache`` with
    ``ignore_mismatch=False`` returns False for a cache of another device.
    """
    if cache_path is None:
        return "none"
    stored = b""
    if cache_path.is_file():
        try:
            stored = cache_path.read_bytes()
        except OSError as exc:
            warn(f"cannot read the TensorRT timing cache {cache_path} ({exc.strerror}); starting a fresh one")
    if stored:
        try:
            cache = config.create_timing_cache(stored)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return "stored"
        except Exception:  # TensorRT raises assorted types for a damaged cache
            pass
        warn(
            f"the TensorRT timing cache {cache_path} is from another GPU or TensorRT version, or damaged; "
            "starting a fresh one"
        )
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        warn("TensorRT refused a fresh timing cache; building without one")
        return "none"
    return "fresh"


def save_timing_cache(config, cache_path: Path) -> None:
    """Store the builder's timing cache for the next build; a cache that cannot be had or written is a warning."""
    from serving.atomic_files import write_bytes_atomic

    cache = config.get_timing_cache()
    if cache is None:
        warn("TensorRT returned no timing cache after the build; the next build starts without one")
        return
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache_path, bytes(cache.serialize()))
    except OSError as exc:
        warn(f"cannot write the TensorRT timing cache {cache_path} ({exc.strerror})")


def build_target(options: TensorRTOptions) -> dict[str, Any]:
    """The manifest's ``target``: the GPU, TensorRT and CUDA the engine was built on and for."""
    import tensorrt as trt

    from serving.backends.tensorrt import gpu_identity, import_cudart

    cudart = import_cudart()
    cc, gpu_name = gpu_identity(cudart)
    _, runtime_version = cudart.cudaRuntimeGetVersion()
    _, driver_version = cudart.cudaDriverGetVersion()
    return {
        "gpu_name": gpu_name,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "hardware_compatibility": "ampere+" if options.hardware_compatible else "none",
        "version_compatible": True,
        "lean_runtime_excluded": True,
        "tensorrt_version": str(trt.__version__),
        "cuda_runtime_version": f"{runtime_version // 1000}.{runtime_version % 1000 // 10}",
        "cuda_driver_version": f"{driver_version // 1000}.{driver_version % 1000 // 10}",
        "strongly_typed": True,
        "tf32": False,
        "optimization_level": options.optimization_level,
        "workspace_bytes": int(options.workspace_gib * 2**30),
    }


def build(
    onnx_path: Path, size: tuple[int, int], options: TensorRTOptions, path: Path, weights: dict[str, int] | None = None
) -> dict[str, Any]:
    """Compile, inspect and write the engine to ``path``; return its manifest fields (minus file/sha).

    ``weights``: the source graph's weight bytes, as stored and in fp32 (its ``graph_check``), for the fp16 gate.
    """
    settings = builder_settings(options, size)
    try:
        plan, applied = compile_engine(onnx_path, settings)
    except BuildError:
        raise
    except Exception as exc:  # TensorRT raises many error types
        raise BuildError(f"TensorRT engine build failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    description = describe_engine(plan, size, options.opt_batch)
    problem = io_problem(description["io"], size, options.max_batch)
    if problem:
        raise BuildError(f"TensorRT engine has the wrong interface: {problem}")
    summary = precision_summary(description["layers"])
    problem = fp16_problem(summary, weights, len(plan))
    summary["size"] = size_evidence(weights, len(plan))
    if problem:
        raise BuildError(f"TensorRT engine is not fp16: {problem}")
    path.write_bytes(plan)
    return {
        "target": build_target(options),
        "io": description["io"],
        "precision_check": summary,
        "builder": {**settings, "applied": applied, "source": onnx_path.name},
        "build_options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
