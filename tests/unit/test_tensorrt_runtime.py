"""The TensorRT backend and the engine checks against fakes of TensorRT and the CUDA runtime.

No GPU here: the fakes keep the rules the real runtime documents and that the code must
respect (a CUDA graph belongs to the context state it was captured with; a plan built with
the lean runtime excluded opens in the lean runtime; a timing cache of another device is
refused by ``set_timing_cache``). The GPU check proves the same on hardware.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import types

import numpy as np
import pytest

from tests.toy_bundle import SIZE, toy_manifest

HEIGHT, WIDTH = SIZE


class FakeCudart:
    """Device memory is host memory; a stream capture records the work, a graph launch replays it."""

    class cudaError_t:  # noqa: N801 - the names the CUDA runtime bindings use
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1

    def __init__(self):
        self.blocks: dict[int, ctypes.Array] = {}
        self.capture: list | None = None
        self.captures = 0
        self.launches = 0

    def _alloc(self, nbytes):
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaSetDevice(self, device):
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, 7

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capture = []
        self.captures += 1
        return (0,)

    def cudaStreamEndCapture(self, stream):
        work, self.capture = self.capture, None
        return 0, types.SimpleNamespace(work=work)

    def cudaGraphInstantiate(self, graph, flags):
        return 0, types.SimpleNamespace(work=list(graph.work))

    def cudaGraphLaunch(self, executable, stream):
        self.launches += 1
        for step in executable.work:
            step()
        return (0,)

    def _ok(self, *args):
        return (0,)

    cudaGraphDestroy = cudaGraphExecDestroy = cudaFree = cudaFreeHost = cudaStreamDestroy = _ok

    def cudaGraphUpload(self, executable, stream):
        self.uploads = getattr(self, "uploads", 0) + 1
        return (0,)


class FakeContext:
    """Computes the toy mask (channel mean). Work captured in a graph checks, when replayed, that the
    context's input shape has not been set again since the capture."""

    def __init__(self, engine, strategy):
        self.engine, self.strategy = engine, strategy
        self.shape: tuple | None = None
        self.shape_settings = 0
        self.addresses: dict[str, int] = {}
        self.scratch = None

    def set_device_memory(self, pointer, size):
        self.scratch = (pointer, size)

    def set_input_shape(self, name, shape):
        self.shape, self.shape_settings = tuple(shape), self.shape_settings + 1
        return 1 <= shape[0] <= self.engine.max_batch

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream):
        captured_state = (self.shape, self.shape_settings)

        def run():
            if self.engine.cudart.capture is None and (self.shape, self.shape_settings) != captured_state:
                raise AssertionError(
                    f"a graph captured at {captured_state[0]} replayed on a context whose shape was set again "
                    f"(now {self.shape})"
                )
            n = captured_state[0][0]
            count = n * 3 * HEIGHT * WIDTH
            image = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["image"]))
            mask = image.reshape(n, 3, HEIGHT, WIDTH).mean(axis=1, keepdims=True)
            out = (ctypes.c_float * mask.size).from_address(self.addresses["mask"])
            np.ctypeslib.as_array(out)[:] = mask.ravel()

        if self.engine.cudart.capture is not None:
            self.engine.cudart.capture.append(run)
        else:
            self.engine.plain_runs += 1
            run()
        return True


class FakeEngine:
    num_io_tensors = 2
    device_memory_size_v2 = 4096

    def __init__(self, cudart, max_batch):
        self.cudart, self.max_batch = cudart, max_batch
        self.contexts: list[FakeContext] = []
        self.plain_runs = 0

    def get_tensor_name(self, index):
        return ("image", "mask")[index]

    def create_execution_context(self, strategy="STATIC"):
        self.contexts.append(FakeContext(self, strategy))
        return self.contexts[-1]


class Logger:
    ERROR = 1

    def __init__(self, level):
        self.level = level


def fake_tensorrt(engine, version="11.1.0.106"):
    runtimes = []

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False
            runtimes.append(self)

        def deserialize_cuda_engine(self, plan):
            return engine

    return types.SimpleNamespace(
        __version__=version,
        Runtime=Runtime,
        Logger=Logger,
        ExecutionContextAllocationStrategy=types.SimpleNamespace(STATIC="STATIC", USER_MANAGED="USER_MANAGED"),
        runtimes=runtimes,
    )


@pytest.fixture
def fake_backend(monkeypatch, tmp_path):
    """A TensorRTBackend (max batch 3) on the fakes, as the lean runtime."""
    from serving.backends import tensorrt as backend_module
    from serving.bundle import Bundle
    from serving.manifest import Artifact

    def make(graphs: bool | None = True):
        cudart = FakeCudart()
        engine = FakeEngine(cudart, max_batch=3)
        trt = fake_tensorrt(engine)
        monkeypatch.setattr(backend_module, "probe", lambda artifact: (trt, "tensorrt_lean", cudart, None))
        if graphs is not None:  # None: as the environment says
            monkeypatch.setenv("INSPYRENET_TRT_CUDA_GRAPHS", "1" if graphs else "0")
        plan = tmp_path / "model.plan"
        plan.write_bytes(b"plan")
        artifact = Artifact(
            file=plan.name, sha256="0" * 64, bytes=4, backend="tensorrt", precision="fp16", device="cuda", max_batch=3
        )
        bundle = Bundle(root=tmp_path, manifest=toy_manifest([artifact]), artifacts=(artifact,))
        return backend_module.TensorRTBackend(bundle, artifact), engine, cudart, trt

    return make


def batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, HEIGHT, WIDTH), dtype=np.float32)


def test_graph_replays_at_batch_sizes_1_2_1_3_equal_plain_execution(fake_backend):
    backend, engine, cudart, _ = fake_backend(graphs=True)
    sizes = (1, 2, 1, 3, 2, 1)
    replayed = [backend.infer(batch(n, i)) for i, n in enumerate(sizes)]
    assert (cudart.captures, cudart.uploads) == (3, 3), "one capture per size, uploaded at once"
    # Each call runs the engine once: plainly the first time at a size (before: plainly, then the graph too).
    assert (engine.plain_runs, cudart.launches) == (3, len(sizes) - 3)
    assert set(backend.startup_phases) == {"first_runs", "graph_captures"}
    plain_backend, _, plain_cudart, _ = fake_backend(graphs=False)
    plain = [plain_backend.infer(batch(n, i)) for i, n in enumerate(sizes)]
    assert plain_cudart.launches == 0
    for n, got, want, data in zip(sizes, replayed, plain, (batch(n, i) for i, n in enumerate(sizes))):
        assert got.shape == (n, 1, HEIGHT, WIDTH)
        np.testing.assert_allclose(got, data.mean(axis=1, keepdims=True), rtol=1e-6)
        np.testing.assert_array_equal(got, want)
    backend.close()


def test_the_gpu_checks_replay_comparison_runs_with_graphs_then_without(fake_backend, monkeypatch):
    from pipeline.engine_check import replay_vs_plain

    monkeypatch.delenv("INSPYRENET_TRT_CUDA_GRAPHS", raising=False)
    opened = []

    def open_backend():
        backend, _, cudart, _ = fake_backend(graphs=None)
        opened.append(cudart)
        return backend

    result = replay_vs_plain(open_backend, batch(1, 3)[0])
    assert result == {"max_abs_by_step": {"step0_batch1": 0.0, "step1_batch2": 0.0, "step2_batch1": 0.0}, "equal": True}
    assert [(c.captures, c.launches) for c in opened] == [(2, 3), (0, 0)]
    assert "INSPYRENET_TRT_CUDA_GRAPHS" not in os.environ  # put back as it was


def test_each_batch_size_has_its_own_context_whose_shape_is_set_once(fake_backend):
    backend, engine, _, _ = fake_backend(graphs=True)
    for n in (1, 2, 1, 3, 1, 2):
        backend.infer(batch(n, n))
    assert sorted(c.shape[0] for c in engine.contexts) == [1, 2, 3]
    assert all(c.shape_settings == 1 for c in engine.contexts)
    assert backend.describe()["contexts"] == [1, 2, 3]
    # the contexts run one at a time on one stream: they share one scratch block of the engine's size
    assert {c.strategy for c in engine.contexts} == {"USER_MANAGED"}
    assert len({c.scratch for c in engine.contexts}) == 1
    assert engine.contexts[0].scratch[1] == FakeEngine.device_memory_size_v2


def test_a_batch_larger_than_the_engine_takes_is_split(fake_backend):
    backend, engine, _, _ = fake_backend(graphs=True)
    data = batch(5, 9)
    np.testing.assert_allclose(backend.infer(data), data.mean(axis=1, keepdims=True), rtol=1e-6)
    assert sorted(c.shape[0] for c in engine.contexts) == [1, 2, 3]  # 1 at load, then 3 + 2


def test_the_lean_runtime_is_allowed_engine_host_code(fake_backend):
    backend, _, _, trt = fake_backend()
    assert backend.runtime_name == "tensorrt_lean"
    assert [r.engine_host_code_allowed for r in trt.runtimes] == [True]


class FakeCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self):
        return self.data or b"fresh-cache"


class FakeConfig:
    """``set_timing_cache`` refuses (returns False) a cache that is not from this GPU, as TensorRT does."""

    def __init__(self, after_build=True):
        self.cache = None
        self.after_build = after_build

    def create_timing_cache(self, data: bytes):
        if data.startswith(b"garbage"):
            raise RuntimeError("deserialization failed")
        return FakeCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.data not in (b"", b"this-gpu"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache if self.after_build else None


@pytest.mark.parametrize(
    ("stored", "used", "warned"),
    [
        (b"this-gpu", "stored", False),
        (b"another-gpu", "fresh", True),
        (b"garbage", "fresh", True),
        (None, "fresh", False),
    ],
)
def test_a_timing_cache_of_another_device_costs_a_warning_and_a_fresh_cache(tmp_path, capsys, stored, used, warned):
    from pipeline.export.tensorrt_engine import use_timing_cache

    path = tmp_path / "timing.cache"
    if stored is not None:
        path.write_bytes(stored)
    config = FakeConfig()
    assert use_timing_cache(config, path) == used
    assert config.cache is not None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "another GPU or TensorRT version" in lines[0]
        assert str(path) in lines[0]


def test_no_timing_cache_after_the_build_is_a_warning_not_a_failure(tmp_path, capsys):
    from pipeline.export.tensorrt_engine import save_timing_cache, use_timing_cache

    path = tmp_path / "cache" / "timing.cache"
    config = FakeConfig(after_build=False)
    use_timing_cache(config, path)
    save_timing_cache(config, path)
    assert not path.exists()
    assert "no timing cache" in capsys.readouterr().err
    config = FakeConfig()
    use_timing_cache(config, path)
    save_timing_cache(config, path)
    assert path.read_bytes() == b"fresh-cache"


class InspectableEngine:
    num_io_tensors = 2

    def get_tensor_name(self, index):
        return ("image", "mask")[index]

    def get_tensor_dtype(self, name):
        return "DataType.FLOAT"

    def get_tensor_shape(self, name):
        return [-1, 3 if name == "image" else 1, HEIGHT, WIDTH]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "image" else "OUTPUT"

    def get_tensor_profile_shape(self, name, profile):
        return [1, 3, HEIGHT, WIDTH], [1, 3, HEIGHT, WIDTH], [4, 3, HEIGHT, WIDTH]

    def create_execution_context(self):
        return types.SimpleNamespace(set_input_shape=lambda name, shape: True)

    def create_engine_inspector(self):
        return types.SimpleNamespace(
            execution_context=None,
            get_engine_information=lambda fmt: json.dumps({"Layers": [{"LayerType": "Convolution"}]}),
        )


def test_the_built_engine_is_checked_with_the_lean_runtime_that_serves_it(monkeypatch, tmp_path):
    """The full runtime here refuses the plan (lean runtime excluded); the build still accepts it,
    because it opens the plan with the lean runtime, and reads the layers through load_runtime."""
    from pipeline.export.tensorrt_inspection import describe_engine

    engine, loaded = InspectableEngine(), []

    def runtime_class(deserialises: bool):
        class Runtime:
            def __init__(self, logger=None):
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, plan):
                return engine if deserialises else None

            def load_runtime(self, path):
                loaded.append(path)
                return runtime_class(True)()

        return Runtime

    common = {
        "__version__": "11.1.0.106",
        "Logger": Logger,
        "TensorIOMode": types.SimpleNamespace(INPUT="INPUT"),
        "LayerInformationFormat": types.SimpleNamespace(JSON="JSON"),
    }
    full = types.SimpleNamespace(Runtime=runtime_class(False), **common)
    lean = types.SimpleNamespace(Runtime=runtime_class(True), **common)
    (tmp_path / "libnvinfer_lean.so.11").write_bytes(b"")
    libs = types.SimpleNamespace(__file__=str(tmp_path / "__init__.py"))
    monkeypatch.setitem(sys.modules, "tensorrt", full)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    monkeypatch.setitem(sys.modules, "tensorrt_lean_libs", libs)
    described = describe_engine(b"plan", SIZE)
    assert described["io"]["input"]["max_shape"] == [4, 3, HEIGHT, WIDTH]
    assert described["checked_with"] == "tensorrt_lean 11.1.0.106"
    assert loaded == [str(tmp_path / "libnvinfer_lean.so.11")]

    from pipeline.errors import BuildError

    monkeypatch.setitem(sys.modules, "tensorrt_lean", types.SimpleNamespace(**{**vars(lean), "__version__": "11.0.0"}))
    with pytest.raises(BuildError, match="same version"):
        describe_engine(b"plan", SIZE)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)
    with pytest.raises(BuildError, match="lean runtime .* is not installed"):
        describe_engine(b"plan", SIZE)


def test_the_runtime_load_runtime_returns_is_used_while_its_parent_and_logger_live(monkeypatch, tmp_path):
    """``load_runtime``'s binding keeps neither the parent runtime nor its logger alive (issue 37): the
    build held neither, so the loaded runtime was used after both were gone."""
    import weakref

    from pipeline.export.tensorrt_inspection import describe_engine

    gone: list[str] = []

    class TrackedLogger(Logger):
        def __del__(self):
            gone.append("logger")

    class Loaded:
        def __init__(self, parent):
            self.parent = weakref.ref(parent)

        def deserialize_cuda_engine(self, plan):
            parent = self.parent()
            alive = parent is not None and parent.logger() is not None
            return InspectableEngine() if alive else None  # the real one would read freed memory

        def __del__(self):
            gone.append("loaded")

    class Parent:
        def __init__(self, logger):
            self.logger = weakref.ref(logger)

        def load_runtime(self, path):
            return Loaded(self)

        def __del__(self):
            gone.append("parent")

    class LeanRuntime:
        def __init__(self, logger=None):
            pass

        def deserialize_cuda_engine(self, plan):
            return InspectableEngine()

    common = {
        "__version__": "11.1.0.106",
        "TensorIOMode": types.SimpleNamespace(INPUT="INPUT"),
        "LayerInformationFormat": types.SimpleNamespace(JSON="JSON"),
    }
    (tmp_path / "libnvinfer_lean.so.11").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(Runtime=Parent, Logger=TrackedLogger, **common))
    monkeypatch.setitem(
        sys.modules, "tensorrt_lean", types.SimpleNamespace(Runtime=LeanRuntime, Logger=Logger, **common)
    )
    monkeypatch.setitem(sys.modules, "tensorrt_lean_libs", types.SimpleNamespace(__file__=str(tmp_path / "x.py")))
    described = describe_engine(b"plan", SIZE)
    assert described["layers"] == {"Layers": [{"LayerType": "Convolution"}]}
    assert gone == ["loaded", "parent", "logger"]  # the loaded runtime goes first
