"""scripts/build-bundles.sh and scripts/build-engines.sh with `inspyrenet` replaced by a stub that records its calls."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import REPO


def run_script(
    script: str, tmp_path, env: dict, args=(), fail_on: str = ""
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/SCRIPT with `inspyrenet` replaced by a stub that records its arguments (and fails on FAIL_ON)."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    calls = tmp_path / "calls"
    stub = stub_dir / "inspyrenet"
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *"{fail_on or "@never@"}"*) exit 1;; esac\n'
        f'case "$*" in published*) exit "${{PUBLISHED_STATUS:-3}}";; esac\nexit 0\n'
    )
    stub.chmod(0o755)
    full_env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "OUT_DIR": str(tmp_path / "out"), **env}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True, env=full_env
    )
    return result, (calls.read_text().splitlines() if calls.exists() else [])


def test_cpu_build_script_builds_both_modes_without_tensorrt_then_publishes_per_mode(tmp_path):
    result, calls = run_script("build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://acme-bundles/cpu"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"build --mode base --checkpoint official --out {out}/base --no-tensorrt",
        f"build --mode fast --checkpoint official --out {out}/fast --no-tensorrt",
        f"publish {out}/base gs://acme-bundles/cpu/base",
        f"publish {out}/fast gs://acme-bundles/cpu/fast",
    ]


def test_cpu_build_script_stops_at_a_failed_build_and_publishes_nothing(tmp_path):
    result, calls = run_script(
        "build-bundles.sh", tmp_path, {"PUBLISH_URI": "gs://acme-bundles/cpu"}, fail_on="--mode base "
    )
    assert result.returncode != 0
    assert len(calls) == 1
    assert calls[0].startswith("build --mode base")


def test_engine_script_pulls_adds_required_engines_then_publishes(tmp_path):
    env = {
        "SOURCE_URI": "gs://acme-bundles/cpu",
        "PUBLISH_URI": "gs://acme-bundles/bundles",
        "ENGINE_FLAGS": "--hardware-compatible",
    }
    result, calls = run_script("build-engines.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert calls == [
        f"pull gs://acme-bundles/cpu/base/latest {out}/base",
        f"published {out}/base gs://acme-bundles/bundles/base",
        f"build-engine {out}/base --require-tensorrt --hardware-compatible",
        f"pull gs://acme-bundles/cpu/fast/latest {out}/fast",
        f"published {out}/fast gs://acme-bundles/bundles/fast",
        f"build-engine {out}/fast --require-tensorrt --hardware-compatible",
        f"publish {out}/base gs://acme-bundles/bundles/base",
        f"publish {out}/fast gs://acme-bundles/bundles/fast",
    ]


def test_engine_script_retried_skips_the_modes_already_published(tmp_path):
    """A retried Cloud Run task: the first attempt published everything; nothing is rebuilt or republished."""
    env = {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://acme-bundles/bundles", "PUBLISHED_STATUS": "0"}
    result, calls = run_script("build-engines.sh", tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert not any(c.startswith(("build-engine", "publish ")) for c in calls), calls
    assert result.stdout.count("already published (a retried task)") == 2


def test_engine_script_stops_when_the_published_check_fails(tmp_path):
    env = {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://acme-bundles/bundles", "PUBLISHED_STATUS": "1"}
    result, calls = run_script("build-engines.sh", tmp_path, env, args=("fast",))
    assert result.returncode == 1
    assert not any(c.startswith(("build-engine", "publish ")) for c in calls), calls


@pytest.mark.parametrize(
    ("env", "args", "words"),
    [
        ({"SOURCE_URI": "s3://b/cpu"}, (), "SOURCE_URI must be gs://BUCKET/PREFIX"),
        (
            {"SOURCE_URI": "gs://acme-bundles/cpu", "PUBLISH_URI": "gs://B A D"},
            (),
            "PUBLISH_URI must be gs://BUCKET/PREFIX",
        ),
        ({"SOURCE_URI": "gs://acme-bundles/cpu"}, ("large",), "unknown mode 'large'"),
        ({}, ("fast",), "no bundle at"),
    ],
)
def test_engine_script_refuses_bad_inputs_before_any_work(tmp_path, env, args, words):
    result, calls = run_script("build-engines.sh", tmp_path, env, args=args)
    assert result.returncode == 2
    assert words in result.stderr
    assert calls == []


def test_engine_script_stops_when_an_engine_cannot_be_built(tmp_path):
    (tmp_path / "out" / "fast").mkdir(parents=True)
    (tmp_path / "out" / "fast" / "manifest.json").write_text("{}")
    result, calls = run_script(
        "build-engines.sh",
        tmp_path,
        {"PUBLISH_URI": "gs://acme-bundles/bundles"},
        args=("fast",),
        fail_on="build-engine",
    )
    assert result.returncode != 0
    assert calls == [
        f"published {tmp_path / 'out'}/fast gs://acme-bundles/bundles/fast",
        f"build-engine {tmp_path / 'out'}/fast --require-tensorrt",
    ]
