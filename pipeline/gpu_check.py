"""One JSON summary of what runs on this CUDA machine (``scripts/gpu-check.sh``).

Stages, each timed, each failure caught into the JSON, which is written again
after every stage (so a run killed half-way still leaves every figure it got):

- ``fp32_eager``: the fp32 model over the parity set at the mode's size
  (1024x1024 for base): the references and the latency;
- ``fp16_islands``: the fp16-with-fp32-islands graph (what TensorRT builds) in
  PyTorch: the overflow question, with latencies (on a CPU it runs emulated
  unless native fp16 is fast there: pipeline.export.fp16_emulation);
- ``torchscript``: trace, save, load time, latency, parity vs eager.

The engine is not built here: TensorRT's builder ([tensorrt-build], CUDA 12
bindings) cannot be installed next to [build]'s torch 2.14 (CUDA 13). The
engine's check is ``inspyrenet gpu-check`` (``pipeline.engine_check``), run
from the build image, without torch.

Needs PyTorch with CUDA and the project's [build] dependencies, already
installed (no step here needs the internet; the synthetic checkpoint unless
--checkpoint names one): the [build] extra's torch 2.14 is a CUDA 13 build,
which needs a driver >= 580, so on Cloud Run's L4 (driver 535, CUDA 12) the
engine route is checked without torch by ``inspyrenet gpu-check`` from the
build image. Runs on CPU too (--device cpu), which is how the tests keep it working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import engine_check
from pipeline.engine_check import parity


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


def write_summary(summary: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        from serving.atomic_files import write_json_atomic

        write_json_atomic(out, summary)


def run_stages(
    stages: list[tuple[str, Callable[[], dict[str, Any]]]], summary: dict[str, Any], out: Path | None
) -> dict[str, Any]:
    """Run each stage, catching its error into the summary, which is written after every stage."""
    return engine_check.run_stages(stages, summary, lambda written: write_summary(written, out))


class CheckContext:
    """The state the stages share: model weights, inputs, references."""

    def __init__(
        self,
        mode: str,
        checkpoint: str,
        device: str,
        images: int | None,
        repeats: int,
        fp16_mode: str,
    ):
        import torch

        from pipeline import checkpoint as checkpoints
        from pipeline.export.model import expected_keys
        from pipeline.parity import images as parity_images
        from serving.imaging.contract import decode_image, preprocess

        self.torch, self.device, self.repeats = torch, device, repeats
        self.fp16_mode = fp16_mode
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.size = checkpoints.input_size(mode)
        self.ckpt = checkpoints.resolve(checkpoint, mode)
        self.state = checkpoints.load_state_dict(self.ckpt, expected_keys())
        cases = parity_images.default_set()[:images] if images else parity_images.default_set()
        self.names = [c.name for c in cases]
        self.inputs = [preprocess(decode_image(c.data), self.size) for c in cases]
        self.tensors = [torch.from_numpy(x).to(device) for x in self.inputs]
        self.references: list[np.ndarray] = []
        self.eager: Any = None  # the fp32 model, once fp32_eager has run

    def header(self) -> dict[str, Any]:
        torch = self.torch
        info = {
            "device": self.device,
            "torch": torch.__version__,
            "size": list(self.size),
            "checkpoint": self.ckpt.source,
            "production_weights": self.ckpt.production_ready,
            "images": self.names,
        }
        if self.device == "cuda":
            info.update(
                gpu=torch.cuda.get_device_name(0),
                cuda=torch.version.cuda,
                compute_capability="{}.{}".format(*torch.cuda.get_device_capability(0)),
            )
        return info

    def fp32_eager(self) -> dict[str, Any]:
        from pipeline.export.model import export_model

        self.eager = export_model(self.state, self.size).to(self.device)
        with self.torch.no_grad():
            self.references = [self.eager(t).float().cpu().numpy()[0, 0] for t in self.tensors]
            return {"latency_ms": median_ms(lambda: self.eager(self.tensors[0]), self.sync, self.repeats)}

    def fp16_islands(self) -> dict[str, Any]:
        from pipeline.export.fp16_emulation import fp16_context, fp16_execution
        from pipeline.export.mixed_precision import mixed_precision_model
        from pipeline.parity.check import DEFAULT_LIMITS

        mixed = mixed_precision_model(self.state, self.size).to(self.device)
        how = fp16_execution(self.device, self.fp16_mode)

        def run(tensor):
            with self.torch.no_grad(), fp16_context(how):
                return mixed(tensor)

        outputs = [run(t).float().cpu().numpy()[0, 0] for t in self.tensors]
        return {
            "execution": how.as_dict(),
            "latency_ms": median_ms(lambda: run(self.tensors[0]), self.sync, self.repeats),
            **parity(outputs, self.references, DEFAULT_LIMITS["fp16"]["model"]),
        }

    def torchscript(self) -> dict[str, Any]:
        from pipeline.parity.check import DEFAULT_LIMITS

        torch = self.torch
        with tempfile.TemporaryDirectory() as work, torch.no_grad():
            path = Path(work) / "model.ts"
            start = time.perf_counter()
            torch.jit.trace(self.eager, self.tensors[0], check_trace=False).save(str(path))
            traced_s = time.perf_counter() - start
            start = time.perf_counter()
            loaded = torch.jit.load(str(path), map_location=self.device)
            load_s = time.perf_counter() - start
            outputs = [loaded(t).float().cpu().numpy()[0, 0] for t in self.tensors]
            return {
                "trace_and_save_s": round(traced_s, 2),
                "load_s": round(load_s, 2),
                "latency_ms": median_ms(lambda: loaded(self.tensors[0]), self.sync, self.repeats),
                **parity(outputs, self.references, DEFAULT_LIMITS["fp32"]["model"]),
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="base", choices=("fast", "base"))
    parser.add_argument("--checkpoint", default="synthetic")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--images", type=int, default=None, help="use only the first N parity images")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--fp16-execution",
        default="auto",
        choices=("auto", "native", "emulated"),
        help="on a CPU: native fp16 kernels or emulation (fp32 arithmetic, fp16 storage)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the summary here, after every stage")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        why = (
            f"no CUDA device visible to PyTorch {torch.__version__} (a CUDA {torch.version.cuda} build needs a "
            "driver for that CUDA); the engine route needs no torch: `inspyrenet gpu-check` from the build image"
        )
        print(json.dumps({"error": why}))
        return 2
    start = time.perf_counter()
    check = CheckContext(args.mode, args.checkpoint, args.device, args.images, args.repeats, args.fp16_execution)
    summary: dict[str, Any] = {"mode": args.mode, **check.header()}
    write_summary(summary, args.out)
    run_stages(
        [
            ("fp32_eager", check.fp32_eager),
            ("fp16_islands", check.fp16_islands),
            ("torchscript", check.torchscript),
        ],
        summary,
        args.out,
    )
    return finish(summary, start, args.out)


def finish(summary: dict[str, Any], started: float, out: Path | None) -> int:
    """The whole check's seconds into the summary, written a last time and printed."""
    summary["total_s"] = round(time.perf_counter() - started, 1)
    write_summary(summary, out)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
