"""Run an fp16 PyTorch model on any CPU at fp32 speed: fp16 storage, fp32 arithmetic.

Many x86 CPUs have no native half-precision arithmetic (AVX-512 without
AVX512-FP16/AMX-FP16): there PyTorch's fp16 convolutions and bmm's run 10 to
300 times slower than fp32, and one 384x384 forward pass of the fp16 graph takes
minutes. What the fp16 check needs is not fp16 *arithmetic* but fp16 *storage*:
every tensor the graph states as fp16 holds fp16 values (so anything past 65504
becomes inf, and every intermediate is rounded to 11 bits), which is also what a
GPU does (TensorRT's fp16 kernels accumulate in fp32 and round their outputs).

``Fp16Emulation`` is a ``TorchDispatchMode``: each op that has an fp16 tensor
input runs on fp32 copies of its inputs, and each output the op would have
produced in fp16 is rounded back to fp16. ``fp16_runner`` picks native fp16 where
a quick probe shows the CPU runs it fast (or on a GPU), emulation elsewhere, and
says which it chose.
"""

from __future__ import annotations

import platform
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

HALF = torch.float16
FLOAT = torch.float32
# Native fp16 counts as fast when a convolution costs at most this many times fp32
# (measured: 0.9-1.5x on CPUs with native fp16, 300x on AVX-512 without it).
NATIVE_SLOWDOWN_LIMIT = 3.0


def _meta(value: Any) -> Any:
    return torch.empty_like(value, device="meta") if isinstance(value, torch.Tensor) else value


def _up(value: Any) -> Any:
    return value.to(FLOAT) if isinstance(value, torch.Tensor) and value.dtype == HALF else value


def _has_half(values: Any) -> bool:
    found = []
    tree_map(lambda v: found.append(True) if isinstance(v, torch.Tensor) and v.dtype == HALF else None, values)
    return bool(found)


class Fp16Emulation(TorchDispatchMode):
    """Ops with fp16 inputs compute in fp32; outputs that would be fp16 are rounded to fp16."""

    # Pure data movement and dtype conversions are exact in any precision: run them as they are.
    EXACT = {
        "_to_copy",
        "to",
        "copy_",
        "clone",
        "view",
        "_unsafe_view",
        "reshape",
        "permute",
        "transpose",
        "expand",
        "contiguous",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "t",
        "detach",
        "alias",
        "index",
        "cat",
        "stack",
        "split",
        "split_with_sizes",
        "unbind",
        "chunk",
        "as_strided",
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "lift_fresh",
    }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        exact = func._overloadpacket.__name__ in self.EXACT or not func._schema.returns  # e.g. assertions
        if exact or not _has_half((args, kwargs)):
            return func(*args, **kwargs)
        try:  # the dtypes the op would produce natively (meta tensors: no arithmetic)
            expected = func(*tree_map(_meta, args), **tree_map(_meta, kwargs))
        except Exception:  # an op without a meta kernel: assume fp16 in, fp16 out
            expected = None
        outputs = func(*tree_map(_up, args), **tree_map(_up, kwargs))
        if func._schema.is_mutable:
            return self._write_back(func, args, outputs)
        return self._round_like(outputs, expected)

    @staticmethod
    def _round_like(outputs: Any, expected: Any) -> Any:
        if isinstance(outputs, torch.Tensor):
            want = expected.dtype if isinstance(expected, torch.Tensor) else HALF
            return outputs.to(want) if outputs.dtype == FLOAT and want == HALF else outputs
        if isinstance(outputs, (tuple, list)):
            expected = expected if isinstance(expected, (tuple, list)) else [None] * len(outputs)
            return type(outputs)(Fp16Emulation._round_like(o, e) for o, e in zip(outputs, expected))
        return outputs

    @staticmethod
    def _write_back(func, args, outputs: Any) -> Any:
        """An in-place op ran on fp32 copies: copy the written arguments back into the fp16 originals."""
        for value, argument in zip(args, func._schema.arguments):
            alias = argument.alias_info
            if alias is not None and alias.is_write and isinstance(value, torch.Tensor):
                up = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
                value.copy_(up)
                return value
        return outputs


@dataclass(frozen=True)
class Fp16Execution:
    """How fp16 ran on this machine: 'native' or 'emulated', and why."""

    mode: str
    device: str
    reason: str
    cpu: str
    cpu_capability: str

    def as_dict(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "device": self.device,
            "reason": self.reason,
            "cpu": self.cpu,
            "cpu_capability": self.cpu_capability,
        }


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """PyTorch's CPU kernel level (e.g. AVX2, AVX512); 'AVX512' alone has no native fp16."""
    return str(torch.backends.cpu.get_cpu_capability())


def native_fp16_slowdown(repeats: int = 5) -> float:
    """How many times slower a half-precision convolution runs than fp32 on this CPU (well under a second).

    Both run on one thread, interleaved, best of ``repeats``: a busy machine (tests on
    every core) then slows both alike instead of only the multi-threaded fp32 one.
    """
    x = torch.randn(1, 32, 48, 48)
    w = torch.randn(32, 32, 3, 3) * 0.05
    inputs = {dtype: (x.to(dtype), w.to(dtype)) for dtype in (FLOAT, HALF)}
    best = {dtype: float("inf") for dtype in inputs}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for xs, ws in inputs.values():
                torch.nn.functional.conv2d(xs, ws, padding=1)
            for _ in range(repeats):
                for dtype, (xs, ws) in inputs.items():
                    start = time.perf_counter()
                    torch.nn.functional.conv2d(xs, ws, padding=1)
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best[HALF] / max(best[FLOAT], 1e-9)


FP16_EXECUTION_CHOICES = ("auto", "native", "emulated")


def fp16_execution(device: str, choice: str = "auto") -> Fp16Execution:
    """How to run an fp16 model on ``device``: native on a GPU or on a CPU with fast fp16, else emulated.

    ``choice`` 'native' or 'emulated' overrides the probe (on a CPU).
    """
    if choice not in FP16_EXECUTION_CHOICES:
        raise ValueError(f"fp16 execution {choice!r}: expected one of {', '.join(FP16_EXECUTION_CHOICES)}")
    info = {"device": device, "cpu": cpu_model(), "cpu_capability": cpu_capability()}
    if device != "cpu":
        return Fp16Execution("native", reason="GPU", **info)
    if choice != "auto":
        return Fp16Execution(choice, reason="asked for", **info)
    slowdown = native_fp16_slowdown()
    if slowdown <= NATIVE_SLOWDOWN_LIMIT:
        return Fp16Execution("native", reason=f"probe: native fp16 conv {slowdown:.1f}x the time of fp32", **info)
    return Fp16Execution("emulated", reason=f"probe: native fp16 conv {slowdown:.0f}x slower than fp32", **info)


def fp16_context(execution: Fp16Execution) -> AbstractContextManager:
    """The context to run the fp16 model under for ``execution`` (a fresh one per use)."""
    return Fp16Emulation() if execution.mode == "emulated" else nullcontext()
