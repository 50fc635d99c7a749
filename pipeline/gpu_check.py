"""One JSON summary of what runs on this CUDA machine (``scripts/gpu-check.sh``).

- fp32 eager vs the fp16-with-fp32-islands graph (what TensorRT builds), both
  in PyTorch on the GPU, over the parity set at the mode's size (1024x1024 for
  base): the overflow question, with latencies (on a CPU the fp16 graph runs
  emulated unless native fp16 is fast there: pipeline.fp16_emulation);
- TorchScript on the GPU: trace, save, load time, latency, parity vs eager;
- the TensorRT engine (build, parity, latency) when torch-tensorrt and the
  TensorRT builder import.

Needs PyTorch with CUDA and the project's [build] dependencies; no internet
(the synthetic checkpoint unless --checkpoint names one). Runs on CPU too
(--device cpu), which is how the tests keep it working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def median_ms(run: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def parity(outputs: list[np.ndarray], references: list[np.ndarray], limits) -> dict[str, Any]:
    from pipeline.parity import failures, mask_metrics

    per_image = [mask_metrics(o, r) for o, r in zip(outputs, references)]
    worst = {name: (min if name == "iou" else max)(m[name] for m in per_image)
             for name in ("mean_abs", "p999_abs", "max_abs", "iou", "off_share", "nonfinite")}
    problems = sorted({p for m in per_image for p in failures(m, limits)})
    return {"worst": worst, "passed": not problems, "failures": problems}


def run(mode: str, checkpoint: str, device: str, images: int | None, repeats: int,
        fp16_mode: str = "auto") -> dict[str, Any]:
    import torch

    from pipeline import checkpoint as checkpoints
    from pipeline import parity_images
    from pipeline.fp16_emulation import fp16_context, fp16_execution
    from pipeline.mixed_precision import mixed_precision_model
    from pipeline.model import expected_keys, export_model
    from pipeline.parity import DEFAULT_LIMITS
    from serving.image import decode_image, preprocess

    summary: dict[str, Any] = {"mode": mode, "device": device, "torch": torch.__version__}
    if device == "cuda":
        summary.update(gpu=torch.cuda.get_device_name(0), compute_capability="%d.%d" % torch.cuda.get_device_capability(0),
                       cuda=torch.version.cuda)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    size = checkpoints.input_size(mode)
    ckpt = checkpoints.resolve(checkpoint, mode)
    state = checkpoints.load_state_dict(ckpt, expected_keys())
    summary.update(size=list(size), checkpoint=ckpt.source, production_weights=ckpt.production_ready)
    cases = parity_images.default_set()[:images] if images else parity_images.default_set()
    tensors = [torch.from_numpy(preprocess(decode_image(c.data), size)).to(device) for c in cases]
    summary["images"] = [c.name for c in cases]

    eager = export_model(state, size).to(device)
    with torch.no_grad():
        references = [eager(t).float().cpu().numpy()[0, 0] for t in tensors]
        summary["fp32_eager"] = {"latency_ms": median_ms(lambda: eager(tensors[0]), sync, repeats)}
        mixed = mixed_precision_model(state, size).to(device)
        how = fp16_execution(device, fp16_mode)

        def run_mixed(tensor):
            with fp16_context(how):
                return mixed(tensor)

        outputs = [run_mixed(t).float().cpu().numpy()[0, 0] for t in tensors]
        summary["fp16_islands"] = {"execution": how.as_dict(),
                                   "latency_ms": median_ms(lambda: run_mixed(tensors[0]), sync, repeats),
                                   **parity(outputs, references, DEFAULT_LIMITS["fp16"]["model"])}
        mixed = None  # free the GPU memory before the next model

        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "model.ts"
            start = time.perf_counter()
            torch.jit.trace(eager, tensors[0], check_trace=False).save(str(path))
            traced_s = time.perf_counter() - start
            start = time.perf_counter()
            loaded = torch.jit.load(str(path), map_location=device)
            load_s = time.perf_counter() - start
            outputs = [loaded(t).float().cpu().numpy()[0, 0] for t in tensors]
            summary["torchscript"] = {"trace_and_save_s": round(traced_s, 2), "load_s": round(load_s, 2),
                                      "latency_ms": median_ms(lambda: loaded(tensors[0]), sync, repeats),
                                      **parity(outputs, references, DEFAULT_LIMITS["fp32"]["model"])}
            loaded = None
    summary["tensorrt"] = tensorrt_check(state, size, tensors, references, repeats) if device == "cuda" else {
        "skipped": "TensorRT needs a CUDA device"}
    return summary


def tensorrt_check(state, size, tensors, references, repeats: int) -> dict[str, Any]:
    from pipeline.parity import DEFAULT_LIMITS
    from pipeline.tensorrt_engine import TensorRTOptions, build, unavailable_reason

    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    from serving.backends.tensorrt import TensorRTBackend
    from serving.bundle import Artifact, Bundle

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model.plan"
        start = time.perf_counter()
        fields = build(state, size, TensorRTOptions(max_batch=1), path)
        build_s = time.perf_counter() - start
        record = {"file": path.name, "sha256": "", "bytes": path.stat().st_size, "backend": "tensorrt",
                  "precision": "fp16", "device": "cuda", "max_batch": 1, **fields}
        artifact = Artifact.from_dict(record)
        bundle = Bundle(root=Path(work), manifest={"input": {"shape": ["N", 3, *size]}}, artifacts=(artifact,))
        start = time.perf_counter()
        backend = TensorRTBackend(bundle, artifact)
        load_s = time.perf_counter() - start
        batches = [t.cpu().numpy() for t in tensors]
        outputs = [backend.infer(b)[0, 0] for b in batches]
        latency = median_ms(lambda: backend.infer(batches[0]), lambda: None, repeats)
        backend.close()
    return {"build_s": round(build_s, 1), "load_s": round(load_s, 2), "engine_mb": round(record["bytes"] / 1e6, 1),
            "latency_ms": latency, "precision_check": fields["precision_check"], "target": fields["target"],
            **parity(outputs, references, DEFAULT_LIMITS["fp16"]["model"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="base", choices=("fast", "base"))
    parser.add_argument("--checkpoint", default="synthetic")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--images", type=int, default=None, help="use only the first N parity images")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--fp16-execution", default="auto", choices=("auto", "native", "emulated"),
                        help="on a CPU: native fp16 kernels or emulation (fp32 arithmetic, fp16 storage)")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device visible to PyTorch"}))
        return 2
    start = time.perf_counter()
    summary = run(args.mode, args.checkpoint, args.device, args.images, args.repeats, args.fp16_execution)
    summary["total_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(summary, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
