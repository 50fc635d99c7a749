"""``inspyrenet gpu-check``: does the engine route work on this GPU? One JSON, no torch.

Runs where the product runs: in the build image (Dockerfile.build) on a CUDA 12
host, locally with ``docker run --gpus all`` or as the Cloud Run job
deploy/cloudrun/gpu-check-job.yaml on an L4. Given a bundle built on a CPU
(a folder, or ``gs://`` pulled first), the stages are:

- ``environment``: GPU, NVIDIA driver, CUDA driver API and runtime, TensorRT
  builder and lean runtime, ONNX Runtime and its providers;
- ``bundle``: the bundle read (pulled, timed), verified, its stored parity references;
- ``engine_build``: ``inspyrenet build-engine`` on a linked copy, in a child
  process bounded by what is left of ``--budget`` (the command the build job runs);
- ``tensorrt``: the engine through the serving backend (the lean runtime):
  deserialise and first-inference seconds, latency p50/p90 at batch 1 and the
  engine's largest batch (``--max-batch``, 4), parity against the stored references under the fp16
  limits, and CUDA-graph replay against plain execution at batch sizes 1, 2, 1;
- ``onnxruntime_cuda``: the fp32 ONNX graph on ONNX Runtime's CUDA provider,
  the same figures (at the same largest batch).

Each stage's error is caught into its entry and the JSON is written again after
every stage, so a run cut short keeps what it measured. Exit status: 0 every
stage ran and passed; 1 a stage failed or could not run on this GPU; 3 no CUDA
GPU is visible (every stage says so, nothing else is tried).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EXIT_PASSED, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 3
REPLAY_BATCHES = (1, 2, 1)
RESERVED_AFTER_BUILD_S = 90.0  # what the engine build leaves of the budget for the stages after it


def latency_ms(run: Callable[[], Any], repeats: int) -> dict[str, float]:
    """p50 and p90 of ``repeats`` timed calls after one untimed call (``run`` returns when the work is done)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": round(float(np.percentile(times, 50)), 2), "p90": round(float(np.percentile(times, 90)), 2)}


def parity(outputs: list[np.ndarray], references: list[np.ndarray], limits) -> dict[str, Any]:
    """The worst of each metric over the images, and the limits it broke."""
    from pipeline.parity.check import failures, mask_metrics

    per_image = [mask_metrics(o, r) for o, r in zip(outputs, references)]
    worst = {
        name: (min if name == "iou" else max)(m[name] for m in per_image)
        for name in ("mean_abs", "p999_abs", "max_abs", "iou", "off_share", "nonfinite")
    }
    problems = sorted({p for m in per_image for p in failures(m, limits)})
    return {"worst": worst, "passed": not problems, "failures": problems}


def replay_vs_plain(open_backend: Callable[[], Any], sample: np.ndarray) -> dict[str, Any]:
    """Largest difference between CUDA-graph replays and plain execution at batch sizes 1, 2, 1."""
    batches = [np.repeat(sample[None], n, axis=0) for n in REPLAY_BATCHES]
    previous = os.environ.get("INSPYRENET_TRT_CUDA_GRAPHS")
    outputs = {}
    try:
        for graphs in ("1", "0"):
            os.environ["INSPYRENET_TRT_CUDA_GRAPHS"] = graphs
            backend = open_backend()
            try:
                if graphs == "1":  # as the server's warm-up does: each size once, so every step below replays
                    for n in sorted(set(REPLAY_BATCHES)):
                        backend.infer(batches[REPLAY_BATCHES.index(n)])
                outputs[graphs] = [backend.infer(b) for b in batches]
                used = backend.describe().get("cuda_graphs")
            finally:
                backend.close()
            if graphs == "1" and not used:
                return {"error": "CUDA graph capture failed (the backend fell back to plain execution)"}
    finally:
        if previous is None:
            os.environ.pop("INSPYRENET_TRT_CUDA_GRAPHS", None)
        else:
            os.environ["INSPYRENET_TRT_CUDA_GRAPHS"] = previous
    diffs = {
        f"step{i}_batch{n}": float(np.abs(r - p).max())
        for i, (n, r, p) in enumerate(zip(REPLAY_BATCHES, outputs["1"], outputs["0"]))
    }
    return {"max_abs_by_step": diffs, "equal": all(d == 0.0 for d in diffs.values())}


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version (e.g. 535.216.03), as the driver reports it to containers."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def environment() -> dict[str, Any]:
    """What this machine offers the engine route; ``gpu`` is None (with ``no_gpu`` saying why) without one."""
    import importlib.metadata as metadata

    info: dict[str, Any] = {"nvidia_driver": nvidia_driver()}
    for package in ("tensorrt-cu12", "tensorrt-lean-cu12", "onnxruntime", "onnxruntime-gpu", "cuda-bindings"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    from serving.backends import BackendUnavailableError
    from serving.backends.tensorrt import gpu_identity, import_cudart

    try:
        cudart = import_cudart()
    except BackendUnavailableError as exc:
        return {**info, "gpu": None, "no_gpu": str(exc)}
    cc, name = gpu_identity(cudart)
    if cc is None:
        return {**info, "gpu": None, "no_gpu": name}
    _, driver_api = cudart.cudaDriverGetVersion()
    _, runtime = cudart.cudaRuntimeGetVersion()
    return {
        **info,
        "gpu": name,
        "compute_capability": f"{cc[0]}.{cc[1]}",
        "cuda_driver_api": cuda_version(driver_api),
        "cuda_runtime": cuda_version(runtime),
    }


class EngineCheck:
    """The state the stages share: the bundle, its references, the work folder, the time left."""

    def __init__(
        self, source: str, work: Path, budget_s: float, repeats: int, max_batch: int, engine_flags: tuple[str, ...]
    ):
        self.source, self.work, self.repeats, self.engine_flags = source, work, repeats, engine_flags
        self.max_batch = max_batch  # the engine's largest batch; ONNX Runtime is timed at the same
        self.deadline = time.monotonic() + budget_s
        self.bundle_dir = work / "bundle"
        self.bundle: Any = None
        self.cases: list = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def read_bundle(self) -> dict[str, Any]:
        """A working copy of the bundle (pulled when ``gs://``), verified, with its stored references."""
        from pipeline.bundle_writer import BundleWriter
        from pipeline.parity import references
        from serving.bundle import load_bundle

        start = time.perf_counter()
        result: dict[str, Any] = {"source": self.source}
        if self.source.startswith("gs://"):
            from serving.store.bundles import pull

            pull(self.source, self.bundle_dir, timeout=max(30.0, self.left() / 2))
            result["pull_s"] = round(time.perf_counter() - start, 1)
        else:
            with BundleWriter(self.bundle_dir) as writer:  # hard links: the engine step writes beside it
                writer.keep_files_of(Path(self.source))
                writer.commit(load_bundle(Path(self.source), verify=False).manifest)
        self.bundle = load_bundle(self.bundle_dir, verify=True)
        self.cases = references.load(self.bundle) or []
        if not self.cases:
            raise ValueError("the bundle has no stored parity references: build it with `inspyrenet build`")
        manifest = self.bundle.manifest
        return {
            **result,
            "version": manifest.version_key,
            "mode": manifest.mode,
            "input_size": list(self.bundle.input_size),
            "production_weights": manifest.production_ready,
            "parity_images": len(self.cases),
            "artifacts": [a.name for a in self.bundle.artifacts],
        }

    def engine_build(self) -> dict[str, Any]:
        """``inspyrenet build-engine`` on the working copy, in a child process bounded by the budget."""
        from pipeline.export.tensorrt_engine import builder_problem
        from serving.bundle import load_bundle

        reason = builder_problem()
        if reason:
            return {"skipped": reason}
        budget = self.left() - RESERVED_AFTER_BUILD_S
        if budget <= 0:
            return {"error": "no time left in --budget for the engine build"}
        command = [sys.executable, "-m", "pipeline.cli", "build-engine", str(self.bundle_dir), "--require-tensorrt"]
        command += ["--no-validate", "--trt-max-batch", str(self.max_batch), *self.engine_flags]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"the engine build did not finish in the {budget:.0f} s left of --budget"}
        seconds = round(time.perf_counter() - start, 1)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return {"error": lines[-1] if lines else f"build-engine exited {done.returncode}", "build_s": seconds}
        self.bundle = load_bundle(self.bundle_dir, verify=True)
        engine = self.bundle.artifact("tensorrt")
        return {
            "build_s": seconds,
            "file": engine.file,
            "engine_mb": round(engine.bytes / 1e6, 1),
            "max_batch": engine.max_batch,
            "precision_check": engine.model_dump().get("precision_check"),
            "target": engine.target,
        }

    def tensorrt(self) -> dict[str, Any]:
        from pipeline.parity.check import DEFAULT_LIMITS

        engine = self.bundle.artifact("tensorrt") if self.bundle else None
        if engine is None:
            return {"skipped": "no TensorRT engine in the bundle (the engine build did not add one)"}
        result = self.run_backend(engine, "cuda", DEFAULT_LIMITS["fp16"]["model"])
        if "error" not in result:
            result["graph_replay_vs_plain"] = replay_vs_plain(
                lambda: self.open(engine, "cuda"), self.cases[0].tensor[0]
            )
        return result

    def onnxruntime_cuda(self) -> dict[str, Any]:
        from pipeline.parity.check import DEFAULT_LIMITS

        graph = next((a for a in self.bundle.artifacts if a.backend == "onnxruntime" and a.role is None), None)
        if graph is None:
            return {"skipped": "no ONNX graph to serve in the bundle"}
        result = self.run_backend(graph, "cuda", DEFAULT_LIMITS["fp16"]["model"])
        result["fp32_limits_passed"] = self.passes(result, DEFAULT_LIMITS["fp32"]["model"])
        return result

    @staticmethod
    def passes(result: dict[str, Any], limits) -> bool:
        from pipeline.parity.check import failures

        return "worst" in result and not failures(result["worst"], limits)

    def open(self, artifact, device: str):
        from serving.backends import open_backend

        return open_backend(self.bundle, artifact, device=device)

    def run_backend(self, artifact, device: str, limits) -> dict[str, Any]:
        """Load seconds, first inference, latency at batch 1 and the largest batch, parity over the references."""
        start = time.perf_counter()
        backend = self.open(artifact, device)
        result: dict[str, Any] = {"file": artifact.file, "load_s": round(time.perf_counter() - start, 2)}
        try:
            if backend.device != device:
                return {**result, "error": f"the backend runs on {backend.device}, not {device}"}
            inputs = [case.tensor for case in self.cases]
            start = time.perf_counter()
            outputs = [backend.infer(inputs[0])[0, 0]]
            result["first_inference_s"] = round(time.perf_counter() - start, 3)
            outputs += [backend.infer(tensor)[0, 0] for tensor in inputs[1:]]
            largest = min(backend.max_batch, self.max_batch)
            full = np.repeat(inputs[0], largest, axis=0)
            result["latency_ms"] = {
                "batch_1": latency_ms(lambda: backend.infer(inputs[0]), self.repeats),
                f"batch_{largest}": latency_ms(lambda: backend.infer(full), self.repeats),
            }
            result.update(parity(outputs, [case.model_reference for case in self.cases], limits))
            return result
        finally:
            backend.close()


def run_stages(
    stages: list[tuple[str, Callable[[], dict[str, Any]]]], summary: dict[str, Any], write
) -> dict[str, Any]:
    """Run each stage, catching its error into its entry; the summary is written after every stage."""
    for name, stage in stages:
        start = time.perf_counter()
        try:
            result = stage()
        except Exception as exc:  # a failed stage must not lose the others' figures
            result = {
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "traceback": traceback.format_exc(limit=4).splitlines()[-6:],
            }
        summary[name] = {**result, "stage_s": round(time.perf_counter() - start, 2)}
        write(summary)
    return summary


def stage_passed(entry: dict[str, Any]) -> bool:
    replay = entry.get("graph_replay_vs_plain", {})
    return (
        "error" not in entry
        and "skipped" not in entry
        and entry.get("passed", True)
        and "error" not in replay
        and replay.get("equal", True)
    )


STAGES = ("bundle", "engine_build", "tensorrt", "onnxruntime_cuda")


def check(
    source: str, budget_s: float, repeats: int, max_batch: int, engine_flags: tuple[str, ...], write
) -> tuple[dict, int]:
    """Run every stage; (summary, exit status)."""
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "check": "inspyrenet gpu-check",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    run_stages([("environment", environment)], summary, write)
    env = summary["environment"]
    if env.get("gpu") is None:
        reason = f"no GPU: {env.get('no_gpu') or env.get('error', 'unknown')}"
        for name in STAGES:
            summary[name] = {"skipped": reason}
        summary["status"] = "no GPU"
        summary["total_s"] = round(time.perf_counter() - start, 1)
        write(summary)
        return summary, EXIT_NO_GPU
    with tempfile.TemporaryDirectory(prefix="inspyrenet-gpu-check-") as work:
        state = EngineCheck(source, Path(work), budget_s, repeats, max_batch, engine_flags)
        run_stages(
            [
                ("bundle", state.read_bundle),
                ("engine_build", state.engine_build),
                ("tensorrt", state.tensorrt),
                ("onnxruntime_cuda", state.onnxruntime_cuda),
            ],
            summary,
            write,
        )
    failed = [name for name in STAGES if not stage_passed(summary[name])]
    summary["status"] = "passed" if not failed else "failed: " + ", ".join(failed)
    summary["total_s"] = round(time.perf_counter() - start, 1)
    write(summary)
    return summary, EXIT_PASSED if not failed else EXIT_FAILED


def summary_writer(out: str | None) -> Callable[[dict[str, Any]], None]:
    """Where the JSON goes after every stage: nowhere, a file, a folder (gpu-check.json), or gs://PREFIX."""
    import json

    if not out:
        return lambda summary: None
    if out.startswith("gs://"):
        from serving.store.gcs import Deadline, client, parse_gs_uri, storage_call

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        uri = parse_gs_uri(out).child(f"gpu-check-{stamp}.json")

        def upload(summary: dict[str, Any]) -> None:
            blob = client().bucket(uri.bucket).blob(uri.name)
            text = json.dumps(summary, indent=2, default=str)
            request = Deadline(60, "writing the check's JSON").request()
            storage_call(uri, lambda: blob.upload_from_string(text, content_type="application/json", **request))

        return upload
    from serving.atomic_files import write_json_atomic

    path = Path(out)
    if path.is_dir() or not path.suffix:
        path = path / "gpu-check.json"
    return lambda summary: write_json_atomic(path, summary)
