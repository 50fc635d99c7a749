"""Checkpoint sources: synthetic, local file, gs:// (real emulator), official (offline), bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.harness import FAST_SIZE, run_cli

torch = pytest.importorskip("torch")


def one_error_line(result) -> str:
    """A user error ends the CLI's output with one error line: no traceback, exit != 0.

    Lines of stages that finished before the error may precede it.
    """
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    assert all(line.startswith("ok ") for line in lines[:-1]), result.stderr
    return errors[0]


def test_synthetic_checkpoint_is_deterministic(synthetic_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("INSPYRENET_CACHE", str(tmp_path))
    from pipeline.checkpoint import resolve

    again = resolve("synthetic:0", "fast")
    assert again.path != synthetic_checkpoint.path  # generated afresh, not the cached file
    assert again.sha256 == synthetic_checkpoint.sha256
    assert not again.production_ready


def test_synthetic_masks_are_not_saturated(eager_model, photo_batch):
    batch = torch.from_numpy(np.concatenate(list(photo_batch.values())))
    with torch.no_grad():
        logits = eager_model.network.forward_inspyre(batch)["saliency"][-1]
        masks = eager_model(batch).numpy()
    assert float(logits.abs().max()) < 100  # random weights give ~1e11
    soft = ((masks > 0.05) & (masks < 0.95)).mean()
    assert soft > 0.2, f"only {soft:.1%} of pixels are soft: masks saturated"
    per_image_foreground = (masks > 0.5).mean(axis=(1, 2, 3))
    assert (per_image_foreground > 0.02).all()
    assert (per_image_foreground < 0.98).all()


def test_different_seeds_differ(synthetic_checkpoint):
    from pipeline.checkpoint.synthetic import CALIBRATION_SIZE
    from pipeline.export.model import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = build_network(CALIBRATION_SIZE).state_dict()
    ours = torch.load(synthetic_checkpoint.path, weights_only=True)
    name = "backbone.patch_embed.proj.weight"
    assert not torch.equal(ours[name], other[name])


def test_local_checkpoint_file_is_used(synthetic_checkpoint):
    from pipeline.checkpoint import load_state_dict, resolve
    from pipeline.export.model import expected_keys

    local = resolve(str(synthetic_checkpoint.path), "fast")
    assert local.kind == "file"
    assert local.production_ready
    assert local.sha256 == synthetic_checkpoint.sha256
    state = load_state_dict(local, expected_keys(FAST_SIZE))
    assert len(state) == len(expected_keys(FAST_SIZE))


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_missing_file(tmp_path):
    line = one_error_line(run_cli("build", "--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")))
    assert "not found" in line


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "weights.pth"
    bogus.write_text("these are not weights\n")
    line = one_error_line(run_cli("build", "--checkpoint", str(bogus), "--out", str(tmp_path / "o")))
    assert "not a readable PyTorch checkpoint" in line
    assert not (tmp_path / "o").exists()


def test_state_dict_with_wrong_keys_names_them(tmp_path, synthetic_checkpoint):
    state = torch.load(synthetic_checkpoint.path, weights_only=True)
    del state["decoder.conv1.conv.weight"]
    state["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    line = one_error_line(run_cli("build", "--checkpoint", str(path), "--out", str(tmp_path / "o")))
    assert "1 missing keys (decoder.conv1.conv.weight)" in line
    assert "1 unexpected keys (head.extra.weight)" in line


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_state_dict_of_another_model(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, path)
    line = one_error_line(run_cli("build", "--checkpoint", str(path), "--out", str(tmp_path / "o")))
    assert "does not fit InSPyReNet_SwinB" in line
    assert "missing keys" in line
    assert "and " in line


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_bad_synthetic_seed(tmp_path):
    line = one_error_line(run_cli("build", "--checkpoint", "synthetic:abc", "--out", str(tmp_path / "o")))
    assert "seed must be an integer" in line


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
def test_official_checkpoint_offline_says_so(tmp_path):
    # An empty transparent-background cache and a proxy that refuses: no download possible.
    env = {
        "TRANSPARENT_BACKGROUND_FILE_PATH": str(tmp_path),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    line = one_error_line(run_cli("build", "--mode", "fast", "--out", str(tmp_path / "o"), env=env))
    assert "cannot download the official fast checkpoint" in line
    assert "--checkpoint synthetic" in line


def test_official_checkpoint_reuses_transparent_background_cache(tmp_path, monkeypatch, synthetic_checkpoint):
    """A file already in transparent-background's cache with the config's md5 is used as is."""
    from pipeline import checkpoint

    home = tmp_path / ".transparent-background"
    home.mkdir()
    cached = home / "ckpt_fast.pth"
    cached.write_bytes(b"stand-in for the downloaded file")
    config = (
        "fast:\n"
        "  url: https://example.invalid/ckpt_fast.pth\n"
        f"  md5: {checkpoint._md5(cached)}\n"
        "  ckpt_name: ckpt_fast.pth\n"
        "  base_size: [384, 384]\n"
    )
    (home / "config.yaml").write_text(config)
    monkeypatch.setenv("TRANSPARENT_BACKGROUND_FILE_PATH", str(tmp_path))
    resolved = checkpoint.resolve("official", "fast")
    assert resolved.path == cached
    assert resolved.production_ready


def test_gs_checkpoint_is_downloaded_and_cached(gcs_emulator, synthetic_checkpoint):
    from google.cloud import storage

    from pipeline.checkpoint import resolve

    client = storage.Client()
    bucket = client.create_bucket("weights")
    bucket.blob("inspyrenet/synthetic.pth").upload_from_filename(str(synthetic_checkpoint.path))
    first = resolve("gs://weights/inspyrenet/synthetic.pth", "fast")
    assert first.kind == "gcs"
    assert first.sha256 == synthetic_checkpoint.sha256
    mtime = first.path.stat().st_mtime_ns
    second = resolve("gs://weights/inspyrenet/synthetic.pth", "fast")
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == mtime  # cache hit


@pytest.mark.slow  # runs the inspyrenet command, which imports torch, in a new process
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://no-such-bucket/ckpt.pth", "not found"),
        ("gs://weights/missing.pth", "not found"),
        ("gs://weights", "names a bucket, not an object"),
    ],
)
def test_unreadable_gs_object(gcs_emulator, tmp_path, uri, expected):
    from google.cloud import storage

    client = storage.Client()
    if client.lookup_bucket("weights") is None:
        client.create_bucket("weights")
    env = {"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    line = one_error_line(run_cli("build", "--checkpoint", uri, "--out", str(tmp_path / "o"), env=env))
    assert expected in line
    assert "cannot read checkpoint" in line
