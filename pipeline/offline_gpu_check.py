"""The GPU check for a CUDA machine without internet, run from a carried set (``scripts/gpu-carry.sh``).

Such a machine has Python, PyTorch with CUDA, numpy and onnx, and nothing else of the project's
dependencies; ``scripts/gpu-carry.sh`` brings the rest in ``build/gpu-carry`` (a few cp312 wheels and
small stand-ins, ``write_stand_ins``) and prints the one command that runs this there. Stages, one JSON
written again as each ends (``run_stages``), at each size (384 and 1024 by default):

- ``cpu_fp32_<size>``: the fp32 export model on the CPU, the reference of the stages after it;
- ``fp32_<size>``: the same model on the device (TF32 off): parity against the CPU, latency;
- ``fp16_islands_<size>``: the fp16-with-fp32-islands model (what TensorRT builds): parity against the
  CPU fp32 reference under the fp16 limits, the largest fp16 value any layer produced (against fp16's
  65,504) and the non-finite values anywhere, latency;
- ``graph_replay_<size>``: that model captured as CUDA graphs at batch 1 and 2, replayed 1, 2, 1 on new
  inputs, against eager runs of the same inputs.

Then ``tensorrt_backend_cuda``: ``serving.backends.tensorrt`` on this GPU with the real CUDA runtime
bindings and a fake TensorRT whose engine is one device-to-device ``cudaMemcpyAsync``: buffers, a
context per batch size, graph capture and replay at 1, 2, 1, 2 (every answer checked exactly), the
same through ``replay_vs_plain``, and ``close()`` giving the device memory back.

``--device cpu`` runs every stage that does not need CUDA (fp16 emulated where the CPU has no fast
fp16: ``pipeline.export.fp16_emulation``): how the tests check the carried set.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engine_check import parity, replay_vs_plain
from pipeline.gpu_check import finish, median_ms, run_stages

FP16_MAX = 65504.0
# InSPyReNet's only OpenCV calls: the image pyramid's Gaussian (ksize 7, sigma 1) and the transitions'
# ellipses (17, 9, 5). The cv2 stand-in answers these from values computed here by the real OpenCV.
GAUSSIAN_CALLS = ((7, 1),)
ELLIPSE_SIZES = (17, 9, 5)
# The upstream model files the export models import (the package's __init__ pulls in its GUI and more).
MODEL_FILES = ("InSPyReNet.py", "modules", "backbones")


# -- the stand-ins -------------------------------------------------------------------------------


def write_stand_ins(target: Path) -> None:
    """Small packages in place of what transparent-background's model code imports, from this install."""
    import cv2

    from pipeline import samples

    target.mkdir(parents=True)
    upstream = package_dir("transparent_background")
    package = target / "transparent_background"
    package.mkdir()
    (package / "__init__.py").write_text('"""The model code alone (stand-in): no Remover, no GUI."""\n')
    for name in MODEL_FILES:
        source = upstream / name
        if source.is_dir():
            shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, package / name)
    gaussians = {f"{k},{s}": cv2.getGaussianKernel(k, s).ravel().tolist() for k, s in GAUSSIAN_CALLS}
    ellipses = {k: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)).tolist() for k in ELLIPSE_SIZES}
    (target / "cv2.py").write_text(CV2_STAND_IN.format(ellipse=cv2.MORPH_ELLIPSE, g=gaussians, e=ellipses))
    (target / "kornia").mkdir()
    (target / "kornia" / "__init__.py").write_text("")
    (target / "kornia" / "morphology.py").write_text(KORNIA_STAND_IN)
    (target / "timm").mkdir()
    (target / "timm" / "__init__.py").write_text("")
    (target / "timm" / "layers.py").write_text(TIMM_STAND_IN)
    photos = target / "skimage" / "data"
    photos.mkdir(parents=True)
    (target / "skimage" / "__init__.py").write_text('"""The sample photos alone (stand-in)."""\n')
    upstream_photos = package_dir("skimage") / "data"
    for file in samples.PHOTOS.values():
        shutil.copy2(upstream_photos / file, photos / file)


def package_dir(name: str) -> Path:
    """Where an installed package's files are, found without running its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {name} is not installed here (scripts/install.sh installs it)")
    return Path(list(spec.submodule_search_locations)[0])


CV2_STAND_IN = '''"""OpenCV stand-in: the calls InSPyReNet's model code makes, answered with OpenCV's own values."""
import numpy as np

MORPH_ELLIPSE = {ellipse}
_GAUSSIANS = {g!r}
_ELLIPSES = {e!r}


def getGaussianKernel(ksize, sigma):  # noqa: N802 - OpenCV's name
    return np.array(_GAUSSIANS[f"{{ksize}},{{sigma}}"], dtype=np.float64).reshape(-1, 1)


def getStructuringElement(shape, ksize):  # noqa: N802
    if shape != MORPH_ELLIPSE or ksize[0] != ksize[1] or ksize[0] not in _ELLIPSES:
        raise NotImplementedError(f"the OpenCV stand-in has no structuring element {{shape}} {{ksize}}")
    return np.array(_ELLIPSES[ksize[0]], dtype=np.uint8)
'''

KORNIA_STAND_IN = '''"""kornia stand-in: only the threshold path of InSPyReNet (never exported) dilates and erodes."""


def dilation(*args, **kwargs):
    raise NotImplementedError("kornia stand-in: the exported model never calls dilation")


erosion = dilation
'''

TIMM_STAND_IN = '''"""timm stand-in: the three helpers Swin's code imports."""
import collections.abc

import torch
from torch import nn

trunc_normal_ = nn.init.trunc_normal_


def to_2tuple(value):
    return tuple(value) if isinstance(value, collections.abc.Iterable) else (value, value)


class DropPath(nn.Module):
    """Stochastic depth: identity in eval mode (every stage here)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
'''


# -- the PyTorch stages --------------------------------------------------------------------------


class Check:
    """What the stages share: the weights, the inputs per size, the CPU references."""

    def __init__(self, device: str, sizes: list[int], images: int, repeats: int):
        import torch

        from pipeline import samples
        from pipeline.checkpoint.synthetic import DEFAULT_SEED, synthetic_state_dict
        from serving.imaging.contract import preprocess

        self.torch, self.device, self.repeats = torch, device, repeats
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 stage is fp32
        torch.backends.cudnn.allow_tf32 = False
        start = time.perf_counter()
        self.state = synthetic_state_dict(DEFAULT_SEED)
        self.weights_s = time.perf_counter() - start
        names = list(samples.PHOTOS)[:images]
        self.names = names
        self.inputs = {size: [preprocess(samples.photo(n), (size, size)) for n in names] for size in sizes}
        self.references: dict[int, list[np.ndarray]] = {}

    def header(self) -> dict[str, Any]:
        torch = self.torch
        info = {"device": self.device, "python": sys.version.split()[0], "torch": torch.__version__}
        info.update(
            images=self.names,
            synthetic_weights_s=round(self.weights_s, 1),
            model_code=str(package_dir("transparent_background")),
        )
        if self.device == "cuda":
            info.update(
                gpu=torch.cuda.get_device_name(0),
                compute_capability="{}.{}".format(*torch.cuda.get_device_capability(0)),
                cuda=torch.version.cuda,
            )
        return info

    def _tensors(self, size: int) -> list:
        return [self.torch.from_numpy(x).to(self.device) for x in self.inputs[size]]

    def cpu_fp32(self, size: int) -> dict[str, Any]:
        from pipeline.export.model import export_model

        model = export_model(self.state, (size, size))
        start = time.perf_counter()
        with self.torch.no_grad():
            self.references[size] = [model(self.torch.from_numpy(x)).numpy()[0, 0] for x in self.inputs[size]]
        return {"seconds_per_image": round((time.perf_counter() - start) / len(self.inputs[size]), 2)}

    def fp32(self, size: int) -> dict[str, Any]:
        from pipeline.export.model import export_model
        from pipeline.parity.check import DEFAULT_LIMITS

        start = time.perf_counter()
        model = export_model(self.state, (size, size)).to(self.device)
        moved_s = time.perf_counter() - start
        tensors = self._tensors(size)
        with self.torch.no_grad():
            outputs = [model(t).float().cpu().numpy()[0, 0] for t in tensors]
            latency = median_ms(lambda: model(tensors[0]), self.sync, self.repeats)
        result = parity(outputs, self.references[size], DEFAULT_LIMITS["fp32"]["model"])
        return {"to_device_s": round(moved_s, 2), "latency_ms": round(latency, 1), **result}

    def fp16_islands(self, size: int) -> dict[str, Any]:
        from pipeline.export.fp16_emulation import fp16_context, fp16_execution
        from pipeline.export.mixed_precision import mixed_precision_model
        from pipeline.parity.check import DEFAULT_LIMITS

        model = mixed_precision_model(self.state, (size, size)).to(self.device)
        how = fp16_execution(self.device)
        peaks = Fp16Peaks(self.torch, model)
        tensors = self._tensors(size)
        with self.torch.no_grad(), fp16_context(how):
            outputs = [model(t).float().cpu().numpy()[0, 0] for t in tensors]
            peaks.remove()
            latency = median_ms(lambda: model(tensors[0]), self.sync, self.repeats)
        result = parity(outputs, self.references[size], DEFAULT_LIMITS["fp16"]["model"])
        return {"execution": how.as_dict(), "latency_ms": round(latency, 1), **peaks.summary(), **result}

    def graph_replay(self, size: int) -> dict[str, Any]:
        if self.device != "cuda":
            return {"skipped": "CUDA graphs need a CUDA device"}
        from pipeline.export.mixed_precision import mixed_precision_model

        torch = self.torch
        model = mixed_precision_model(self.state, (size, size)).to("cuda")
        sample = self._tensors(size)[0]
        graphs, static_in, static_out = {}, {}, {}
        with torch.no_grad():
            for n in (1, 2):
                static_in[n] = sample.repeat(n, 1, 1, 1).clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):  # as torch.cuda.graphs asks: warm up on a side stream
                        model(static_in[n])
                torch.cuda.current_stream().wait_stream(side)
                graphs[n] = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graphs[n]):
                    static_out[n] = model(static_in[n])
            diffs = {}
            for step, n in enumerate((1, 2, 1)):
                fresh = (sample.flip(-1) if step % 2 else sample * 0.9).repeat(n, 1, 1, 1)
                static_in[n].copy_(fresh)
                graphs[n].replay()
                torch.cuda.synchronize()
                eager = model(fresh)
                diffs[f"step{step}_batch{n}"] = float((static_out[n] - eager).abs().max())
            replay_ms = median_ms(graphs[1].replay, torch.cuda.synchronize, self.repeats)
            eager_ms = median_ms(lambda: model(static_in[1]), torch.cuda.synchronize, self.repeats)
        return {
            "max_abs_by_step": diffs,
            "equal": all(d == 0.0 for d in diffs.values()),
            "replay_ms": round(replay_ms, 2),
            "eager_ms": round(eager_ms, 2),
        }


class Fp16Peaks:
    """The largest finite magnitude and the non-finite values in every fp16 tensor a layer outputs."""

    def __init__(self, torch, model) -> None:
        self.torch = torch
        self.peak, self.where, self.nonfinite = 0.0, "", 0
        self.handles = [
            module.register_forward_hook(self._hook(name)) for name, module in model.named_modules() if name
        ]

    def _hook(self, name: str):
        def record(module, inputs, output) -> None:
            for tensor in output if isinstance(output, (tuple, list)) else [output]:
                if not isinstance(tensor, self.torch.Tensor) or tensor.dtype != self.torch.float16:
                    continue
                finite = self.torch.isfinite(tensor)
                self.nonfinite += int((~finite).sum())
                if finite.any():
                    peak = float(tensor[finite].abs().max())
                    if peak > self.peak:
                        self.peak, self.where = peak, name

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def summary(self) -> dict[str, Any]:
        return {
            "fp16_peak_abs": self.peak,
            "fp16_peak_layer": self.where,
            "fp16_headroom": round(FP16_MAX / self.peak, 1) if self.peak else None,
            "fp16_nonfinite_values": self.nonfinite,
        }


# -- the TensorRT backend's CUDA half ------------------------------------------------------------


def tensorrt_backend(device: str, size: int = 384) -> dict[str, Any]:
    """``TensorRTBackend`` on the real CUDA runtime, its engine a fake whose work is one real copy."""
    if device != "cuda":
        return {"skipped": "the backend's CUDA half needs a CUDA device"}
    from cuda.bindings import runtime as cudart

    from serving.backends.tensorrt import TensorRTBackend, gpu_identity

    cc, gpu = gpu_identity(cudart)
    if cc is None:
        return {"error": gpu}
    sys.modules["tensorrt_lean"] = fake_tensorrt(cudart, size)
    with tempfile.TemporaryDirectory() as work:
        bundle, artifact = memcpy_bundle(Path(work), size, cc, gpu)
        free_before = cudart.cudaMemGetInfo()[1]
        backend = TensorRTBackend(bundle, artifact)
        rng = np.random.default_rng(0)
        steps = {}
        for step, n in enumerate((1, 2, 1, 2)):
            batch = rng.random((n, 3, size, size), dtype=np.float32)
            want = batch.reshape(-1)[: n * size * size].reshape(n, 1, size, size)
            steps[f"step{step}_batch{n}"] = bool(np.array_equal(backend.infer(batch), want))
        described = backend.describe()
        backend.close()
        freed = cudart.cudaMemGetInfo()[1] - free_before
        replay = replay_vs_plain(lambda: TensorRTBackend(bundle, artifact), np.ones((3, size, size), np.float32))
    return {
        "answers_exact": steps,
        "passed": all(steps.values()) and described["cuda_graphs"] and replay.get("equal", False),
        "cuda_graphs": described["cuda_graphs"],
        "contexts": described["contexts"],
        "startup_phases": backend.startup_phases,
        "graph_replay_vs_plain": replay,
        "device_memory_after_close_vs_before_mb": round(freed / 1e6, 1),
    }


class MemcpyContext:
    """An execution context whose work is one real device-to-device copy of the input's first N*H*W floats."""

    def __init__(self, cudart, size: int):
        self.cudart, self.size = cudart, size
        self.addresses: dict[str, int] = {}
        self.batch = 0

    def set_device_memory(self, pointer, nbytes):
        self.scratch = (pointer, nbytes)

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return 1 <= shape[0] <= 2

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream):
        cudart = self.cudart
        nbytes = self.batch * self.size * self.size * 4
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        (err,) = cudart.cudaMemcpyAsync(self.addresses["mask"], self.addresses["image"], nbytes, kind, stream)
        return err == cudart.cudaError_t.cudaSuccess


def fake_tensorrt(cudart, size: int):
    """A module that stands in for ``tensorrt_lean``: its engines make ``MemcpyContext``s."""
    from types import SimpleNamespace

    engine = SimpleNamespace(
        num_io_tensors=2,
        device_memory_size_v2=1 << 20,
        get_tensor_name=lambda index: ("image", "mask")[index],
        create_execution_context=lambda strategy=None: MemcpyContext(cudart, size),
    )

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, plan):
            return engine

    class Logger:
        ERROR = 1

        def __init__(self, level):
            self.level = level

    return SimpleNamespace(
        __version__="11.1.0.106",
        Logger=Logger,
        Runtime=Runtime,
        ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="USER_MANAGED"),
    )


def memcpy_bundle(root: Path, size: int, cc: tuple[int, int], gpu: str):
    """A bundle of one 'engine' whose target is this GPU, for the fake runtime's version."""
    from pipeline.bundle_writer import file_entry
    from serving.bundle import Bundle
    from serving.manifest import Artifact, CheckpointRecord, InputSpec, Manifest, OutputSpec

    plan = root / "model.plan"
    plan.write_bytes(b"a fake plan: the fake runtime's engine copies its input")
    target = {
        "gpu_name": gpu,
        "compute_capability": f"{cc[0]}.{cc[1]}",
        "hardware_compatibility": "none",
        "version_compatible": True,
        "lean_runtime_excluded": True,
        "tensorrt_version": "11.1.0.106",
    }
    artifact = Artifact(
        **file_entry(plan).to_json(), backend="tensorrt", precision="fp16", device="cuda", max_batch=2, target=target
    )
    manifest = Manifest.new(
        mode="gpu-carry",
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        checkpoint=CheckpointRecord(source="gpu-carry", sha256=""),
        input=InputSpec(name="image", shape=["N", 3, size, size], dtype="float32"),
        output=OutputSpec(name="mask", shape=["N", 1, size, size], dtype="float32"),
        artifacts=[artifact],
    )
    return Bundle(root=root, manifest=manifest, artifacts=(artifact,)), artifact


# -- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the stages, writing the JSON as each ends")
    run.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    run.add_argument("--sizes", default="384,1024", help="input sizes, comma-separated")
    run.add_argument("--images", type=int, default=2, help="sample photos per size (at most 5)")
    run.add_argument("--repeats", type=int, default=10)
    run.add_argument("--out", type=Path, default=None)
    stand_ins = commands.add_parser("stand-ins", help="write the stand-in packages into DIR (here, not there)")
    stand_ins.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "stand-ins":
        write_stand_ins(args.dir)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": f"no CUDA device visible to PyTorch {torch.__version__}"}))
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    check = Check(args.device, sizes, args.images, args.repeats)
    summary: dict[str, Any] = check.header()
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for size in sizes:
        for name, stage in (
            ("cpu_fp32", check.cpu_fp32),
            ("fp32", check.fp32),
            ("fp16_islands", check.fp16_islands),
            ("graph_replay", check.graph_replay),
        ):
            stages.append((f"{name}_{size}", functools.partial(stage, size)))
    stages.append(("tensorrt_backend_cuda", functools.partial(tensorrt_backend, args.device)))
    run_stages(stages, summary, args.out)
    return finish(summary, start, args.out)


if __name__ == "__main__":
    sys.exit(main())
