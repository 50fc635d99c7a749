"""Which artifact of a bundle to serve.

``auto`` tries the bundle's artifacts in the registry's order (serving.backends.REGISTRY): TensorRT (GPU), ONNX
Runtime (CPU, or CUDA with onnxruntime-gpu), TorchScript. Among ONNX Runtime
artifacts the int8 one comes first where ONNX Runtime can only use the CPU
(the CPU package, not onnxruntime-gpu), last otherwise. An artifact whose
parity check failed is never chosen, nor an optional one (int8) whose check
did not pass, nor the fp16 ONNX graph the TensorRT engine is compiled from
(role ``tensorrt-source``). An explicit choice is honoured or fails.

Nothing of a bundle whose parity validation is pending (its build stopped
before it finished) or failed is served unless the operator opts in
(``INSPYRENET_ALLOW_UNVALIDATED``, development only).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from serving.backends import preference, runtime_problem
from serving.bundle import Bundle, BundleError
from serving.manifest import Artifact


class SelectionError(BundleError):
    """No artifact of the bundle may be served as asked."""


def parity_problem(artifact: Artifact) -> str | None:
    """Why the build's parity check rejected the artifact, or None if it did not."""
    parity = artifact.parity
    if parity is not None and parity.failed:
        return f"failed parity at build time ({parity.summary or 'see the parity report'})"
    if artifact.optional and (parity is None or parity.status != "passed"):
        status = parity.status if parity is not None else "none (built with --no-validate?)"
        return f"served only after its parity check passed; its check: {status}"
    return None


def validation_problem(bundle: Bundle) -> str | None:
    """Why the bundle as a whole may not be served: its parity validation did not finish, or failed."""
    validation = bundle.manifest.validation
    finish = f"finish it with `inspyrenet validate {bundle.root}`"
    if validation is None:
        return f"the bundle at {bundle.root} has no parity validation record: {finish}"
    if validation.status == "pending":
        return (
            f"the bundle at {bundle.root} was never validated (its parity check is pending: the build stopped "
            f"before it finished): {finish}"
        )
    if validation.status == "failed":
        why = f" ({validation.reason})" if validation.reason else ""
        return f"the bundle at {bundle.root} failed its parity validation{why}: see {bundle.root}/parity/report.html"
    return None


def onnxruntime_has_gpu() -> bool:
    """Whether the installed ONNX Runtime is the GPU package (asked of the installed distributions, not imported)."""
    try:
        importlib.metadata.distribution("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def auto_order(artifacts: Iterable[Artifact]) -> list[Artifact]:
    """Servable artifacts in ``auto``'s order: by backend, then CPU-only (int8) ones first unless a GPU runtime."""
    cpu_first = not onnxruntime_has_gpu()

    def rank(artifact: Artifact) -> tuple[int, int]:
        cpu_only = artifact.device == "cpu"
        return preference(artifact.backend), (0 if cpu_only == cpu_first else 1)

    return sorted((a for a in artifacts if a.servable), key=rank)


def candidates(bundle: Bundle, requested: str, allow_unvalidated: bool = False) -> tuple[list[Artifact], list[str]]:
    """Artifacts to try in order, and the reasons others were left out."""
    problem = validation_problem(bundle)
    if problem and not allow_unvalidated:
        raise SelectionError(f"{problem} (INSPYRENET_ALLOW_UNVALIDATED=1 serves it anyway, for development)")
    skipped: list[str] = []
    if requested != "auto":
        artifact = bundle.artifact(requested)
        if artifact is None:
            have = ", ".join(a.name for a in bundle.artifacts if a.servable) or "none"
            raise SelectionError(f"the bundle at {bundle.root} has no {requested} artifact (it has: {have})")
        reason = parity_problem(artifact)
        if reason:
            raise SelectionError(f"the {requested} artifact {reason}; refusing to serve it")
        return [artifact], skipped
    chosen = []
    for artifact in auto_order(bundle.artifacts):
        reason = parity_problem(artifact)
        if reason:
            skipped.append(f"{artifact.name}: {reason}")
        else:
            chosen.append(artifact)
    if not chosen:
        raise SelectionError(f"no usable artifact in {bundle.root}: " + "; ".join(skipped or ["the bundle lists none"]))
    return chosen, skipped


def missing_files(bundle: Bundle, artifact: Artifact) -> list[str]:
    """The artifact's files that are not in the bundle directory (pruned from an image, or lost)."""
    return [entry.file for entry in artifact.files if not bundle.path(entry).is_file()]


def prepare_for_install(
    bundle: Bundle, prune: bool = False, fallbacks: bool = True, allow_unvalidated: bool = False
) -> tuple[list[Artifact], list[tuple[Artifact, str]]]:
    """Verify every artifact this install can serve; with ``prune``, delete the files of the others.

    Returns (verified artifacts, [(artifact left out, why)]). Raises BundleError
    when a servable artifact is missing or altered, or when nothing can be
    served here. "Can serve" is decided without a GPU (an image is built on a
    machine without one): the runtime is installed and the build's parity
    check passed. ``fallbacks`` False keeps only the artifact ``auto`` would
    serve first (the CPU image: the int8 graph alone when it passed).
    """
    problem = validation_problem(bundle)
    if problem and not allow_unvalidated:
        raise BundleError(problem)
    served: list[Artifact] = []
    left_out: list[tuple[Artifact, str]] = []
    for artifact in bundle.artifacts:
        reason: str | None
        if not artifact.servable:
            reason = f"not served (role {artifact.role})"
        else:
            reason = runtime_problem(artifact) or parity_problem(artifact)
        if reason is None:
            bundle.verify(artifact)
            served.append(artifact)
        else:
            left_out.append((artifact, reason))
    if not served:
        reasons = "; ".join(f"{a.name}: {why}" for a, why in left_out) or "the bundle lists none"
        raise BundleError(f"nothing in {bundle.root} can be served by this install: {reasons}")
    if not fallbacks:
        first, *others = auto_order(served)
        left_out += [(artifact, f"a fallback of {first.name} (--prune-fallbacks)") for artifact in others]
        served = [first]
    if prune:
        prune_files(bundle, served, [artifact for artifact, _ in left_out])
    return served, left_out


def prune_files(bundle: Bundle, served: list[Artifact], others: list[Artifact]) -> None:
    """Delete the files of ``others`` that no served artifact shares."""
    keep = {entry.file for artifact in served for entry in artifact.files}
    for artifact in others:
        for entry in artifact.files:
            if entry.file not in keep:
                bundle.path(entry).unlink(missing_ok=True)
