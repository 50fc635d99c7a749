"""From a bundle on disk to a warm backend: the start-up both ``serve`` and ``batch`` go through.

``preflight`` runs first, in the main process: it picks the artifacts that may
be served here, in order, and verifies the first one's sha256, so every error
a user can cause is one line before any model is loaded. ``load_warm_backend``
then opens the first artifact that loads *and* runs (a warm-up at every batch
size a caller will use), falling back to the next one with the reason logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving.backends import Backend, BackendUnavailableError, import_runtime, open_backend, run_problem
from serving.backends.selection import candidates, missing_files, validation_problem
from serving.bundle import Bundle, BundleError, load_bundle
from serving.errors import UserError
from serving.logs import log
from serving.manifest import Artifact
from serving.settings import Settings


class ServeError(UserError):
    """The bundle cannot be served here; the message is one line."""


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one log-friendly line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def preflight(settings: Settings) -> tuple[list[str], set[str]]:
    """Backends to try in order and those already verified; raise ServeError if none may be served."""
    start = time.perf_counter()
    bundle = load_bundle(settings.artifacts, verify=False)
    ordered, skipped = candidates(bundle, settings.backend, settings.allow_unvalidated)
    unvalidated = validation_problem(bundle)
    if unvalidated:  # allowed (candidates refuses it otherwise): say so, loudly
        log(f"serving without a passed validation (INSPYRENET_ALLOW_UNVALIDATED): {unvalidated}", severity="WARNING")
    elif bundle.manifest.validation is not None and bundle.manifest.validation.status == "skipped":
        why = bundle.manifest.validation.reason or "no reason recorded"
        log(f"this bundle was built without its parity validation ({why})", severity="WARNING")
    for skip in skipped:
        log("artifact skipped", severity="WARNING", reason=skip)
    log("startup phase", phase="manifest", seconds=round(time.perf_counter() - start, 3), process="main")
    usable: list[str] = []
    verified: set[str] = set()
    reasons = list(skipped)
    for artifact in ordered:
        missing = missing_files(bundle, artifact)
        reason: str | None = f"not in the bundle directory: {', '.join(missing)}" if missing else run_problem(artifact)
        if reason is None and not verified and settings.verify:
            start = time.perf_counter()
            try:
                bundle.verify(artifact)
                verified.add(artifact.name)
                log(
                    "startup phase",
                    phase="verify",
                    seconds=round(time.perf_counter() - start, 3),
                    process="main",
                    backend=artifact.name,
                )
            except BundleError as exc:
                reason = broken(settings, artifact.name, str(exc))
        if reason is None:
            usable.append(artifact.name)
        else:
            reasons.append(f"{artifact.name}: {reason}")
            log("artifact skipped", severity="WARNING", backend=artifact.name, reason=reason)
    if settings.require_gpu:
        usable = require_gpu(bundle, usable, reasons)
    if not usable:
        raise ServeError(f"no usable artifact in {settings.artifacts}: " + "; ".join(reasons))
    return usable, verified


FALLBACKS_HINT = "INSPYRENET_FALLBACKS=1 falls back to the next artifact instead"


def broken(settings: Settings, name: str, reason: str) -> str:
    """An artifact that should run here but is broken (fails to verify, open or warm up): an error, unless
    the operator asked for fallbacks; then the reason, for the caller's warning line."""
    if not settings.fallbacks:
        raise ServeError(f"{name}: {reason} ({FALLBACKS_HINT})")
    return reason


def gpu_problem(artifact: Artifact) -> str | None:
    """Why ``artifact`` cannot run on a GPU here, as far as can be told before loading it.

    torch is imported only for a TorchScript artifact where torch is installed
    (the GPU serving image has none).

    onnxruntime and onnxruntime-gpu install the same module: only the second
    has the CUDA provider, and a session without it runs on the CPU silently.
    """
    problem = run_problem(artifact)
    if problem is None and artifact.device == "cpu":
        return f"{artifact.name} runs on the CPU only ({artifact.precision})"
    if problem or artifact.backend not in ("onnxruntime", "torchscript"):
        return problem
    if artifact.backend == "torchscript":  # torch is imported only here, and only when it is installed
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return (
            "this onnxruntime has no CUDA execution provider (the CPU package onnxruntime is installed, "
            "not onnxruntime-gpu)"
        )
    return None


def require_gpu(bundle: Bundle, usable: list[str], reasons: list[str]) -> list[str]:
    """INSPYRENET_REQUIRE_GPU: the usable backends that can run on a GPU; raise ServeError naming why none can."""
    on_gpu = []
    for name in usable:
        artifact = bundle.artifact(name)
        problem = gpu_problem(artifact) if artifact is not None else "not in the bundle"
        if problem is None:
            on_gpu.append(name)
        else:
            reasons.append(f"{name}: {problem}")
            log("artifact skipped", severity="WARNING", backend=name, reason=f"not on a GPU: {problem}")
    if not on_gpu:
        raise ServeError("INSPYRENET_REQUIRE_GPU is on and no artifact can run on a GPU here: " + "; ".join(reasons))
    return on_gpu


def load_warm_backend(
    settings: Settings,
    backends: list[str],
    verified: set[str],
    warm_sizes: Callable[[Backend], tuple[int, ...]],
    phases: dict[str, float],
    threads: int | None = None,
) -> tuple[Backend, str]:
    """The first of ``backends`` that loads and runs at every batch size ``warm_sizes(backend)`` names.

    Returns the backend and the bundle's mode. ``verified``: the artifacts the
    caller already hashed. ``phases`` receives the seconds of each start-up
    phase. Raises BackendUnavailableError with every artifact's reason when none is
    usable.
    """
    start = time.perf_counter()
    bundle = load_bundle(settings.artifacts, verify=False)
    phases["manifest"] = time.perf_counter() - start
    failures = []
    for name in backends:
        artifact = bundle.artifact(name)
        if artifact is None:
            failures.append(f"{name}: not in the bundle")
            continue
        try:
            start = time.perf_counter()
            if settings.verify and artifact.name not in verified:
                bundle.verify(artifact)
            phases["verify"] = time.perf_counter() - start
            start = time.perf_counter()
            import_runtime(artifact)
            phases["imports"] = time.perf_counter() - start
            start = time.perf_counter()
            backend = open_backend(bundle, artifact, device="cuda" if settings.require_gpu else "auto", threads=threads)
            phases["load"] = time.perf_counter() - start
        except Exception as exc:  # any failure to open an artifact (a corrupt file, a runtime error)
            reason = str(exc) if isinstance(exc, (BundleError, BackendUnavailableError)) else one_line(exc)
            if not settings.fallbacks:
                raise BackendUnavailableError(f"{artifact.name}: {reason} ({FALLBACKS_HINT})") from None
            failures.append(f"{artifact.name}: {reason}")
            log("artifact skipped", severity="WARNING", backend=artifact.name, reason=reason)
            continue
        if settings.require_gpu and backend.device != "cuda":  # cannot run here as asked: skipped either way
            backend.close()
            reason = f"it runs on {backend.device}, and INSPYRENET_REQUIRE_GPU is on"
            failures.append(f"{artifact.name}: {reason}")
            log("artifact skipped", severity="WARNING", backend=artifact.name, reason=reason)
            continue
        start = time.perf_counter()
        problem = warm_up(backend, warm_sizes(backend))
        phases["warmup"] = time.perf_counter() - start
        phases.update({f"warmup_{part}": seconds for part, seconds in backend.startup_phases.items()})
        if problem is None:
            return backend, bundle.mode
        backend.close()
        if not settings.fallbacks:
            raise BackendUnavailableError(f"{artifact.name}: warm-up failed: {problem} ({FALLBACKS_HINT})")
        failures.append(f"{artifact.name}: warm-up failed: {problem}")
        log("artifact skipped", severity="WARNING", backend=artifact.name, reason=f"warm-up failed: {problem}")
    raise BackendUnavailableError(f"no usable artifact in {Path(settings.artifacts)}: " + "; ".join(failures))


def warm_up(backend: Backend, batch_sizes: tuple[int, ...]) -> str | None:
    """Run the model once at every batch size a caller can meet; why that failed, or None.

    A backend that loads but cannot run (a GPU kernel that fails, out of
    memory at the first enqueue) is skipped like one that does not load.
    """
    height, width = backend.bundle.input_size
    probe = np.zeros((1, 3, height, width), dtype=np.float32)
    try:
        outputs = [backend.infer(np.repeat(probe, size, axis=0)) for size in sorted(set(batch_sizes))]
    except Exception as exc:  # any runtime failure means: do not serve this artifact
        return one_line(exc)
    if not all(np.isfinite(out).all() for out in outputs):
        return "the warm-up output is not finite"
    return None
