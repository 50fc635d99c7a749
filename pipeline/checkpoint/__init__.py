"""Resolve a checkpoint SOURCE to a local file and load it as a state dict.

SOURCE is one of:

- ``official``: the checkpoint transparent-background's own config names for
  the mode, in its cache dir (``~/.transparent-background`` or
  ``$TRANSPARENT_BACKGROUND_FILE_PATH``), downloaded when absent, md5-checked;
- a local file path;
- ``gs://bucket/object``, downloaded once per object generation into the cache;
- ``synthetic[:SEED]``: seeded random weights with re-estimated BatchNorm
  statistics (see ``pipeline.checkpoint.synthetic``), never for production.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import CheckpointError
from pipeline.paths import cache_root, transparent_background_home
from serving.bundle import sha256_file
from serving.manifest import CheckpointRecord
from serving.store.gcs import StorageError, download_cached, parse_gs_uri

MODES = ("fast", "base")
DOWNLOAD_TIMEOUT_S = 30
OFFLINE_HINT = "no internet? build offline with --checkpoint synthetic"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: where it is and what it is."""

    source: str
    kind: str  # official | file | gcs | synthetic
    path: Path
    sha256: str
    production_ready: bool
    details: dict[str, Any] = field(default_factory=dict)

    def manifest_record(self) -> CheckpointRecord:
        record = CheckpointRecord(
            source=self.source,
            kind=self.kind,
            file=self.path.name,
            sha256=self.sha256,
            bytes=self.path.stat().st_size,
            production_ready=self.production_ready,
            **self.details,
        )
        if not self.production_ready:
            record.warning = "synthetic weights: masks are not meaningful; never deploy this bundle"
        return record


def mode_config(mode: str) -> dict[str, Any]:
    """transparent-background's config entry for ``mode``: url, md5, ckpt_name, base_size.

    The user's copy in the cache dir wins, as it does for ``Remover``.
    """
    if mode not in MODES:
        raise CheckpointError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    user_config = transparent_background_home() / "config.yaml"
    if user_config.is_file():
        text = user_config.read_text(encoding="utf-8")
    else:
        text = (resources.files("transparent_background") / "config.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    if mode not in config:
        raise CheckpointError(f"transparent-background's config has no entry for mode {mode!r}")
    return dict(config[mode])


def input_size(mode: str) -> tuple[int, int]:
    height, width = mode_config(mode)["base_size"]
    return int(height), int(width)


def resolve(source: str, mode: str) -> Checkpoint:
    """Turn SOURCE into a local checkpoint file (downloading or generating it if needed)."""
    if source == "official":
        return _official(mode)
    if source == "synthetic" or source.startswith("synthetic:"):
        return _synthetic(source)
    if source.startswith("gs://"):
        return _gcs(source)
    return _local(source)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _official(mode: str) -> Checkpoint:
    config = mode_config(mode)
    path = transparent_background_home() / config["ckpt_name"]
    expected_md5 = config.get("md5")
    if not path.is_file() or (expected_md5 and _md5(path) != expected_md5):
        _download(config["url"], path, expected_md5, mode)  # transparent-background's cache: Remover finds it too
    details = {"url": config["url"], "md5": expected_md5}
    return Checkpoint("official", "official", path, sha256_file(path), True, details)


def _download(url: str, path: Path, expected_md5: str | None, mode: str) -> None:
    """pooch: a progress bar on a terminal, the md5 checked, the file moved into place only when whole."""
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")  # its "Downloading..." line: the progress bar (on a terminal) says it
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=DOWNLOAD_TIMEOUT_S)
    known_hash = f"md5:{expected_md5}" if expected_md5 else None
    try:
        pooch.retrieve(url, known_hash, fname=path.name, path=path.parent, downloader=downloader)
    except ValueError as exc:  # pooch: the downloaded file's hash differs (the file is not kept)
        raise CheckpointError(
            f"the official {mode} checkpoint downloaded from {url} fails its md5 check; not using it ({exc})"
        ) from None
    except (requests.RequestException, OSError) as exc:
        raise CheckpointError(
            f"cannot download the official {mode} checkpoint from {url} ({type(exc).__name__}); {OFFLINE_HINT}"
        ) from None


def _synthetic(source: str) -> Checkpoint:
    from pipeline.checkpoint.synthetic import DEFAULT_SEED, synthetic_checkpoint

    _, _, seed_text = source.partition(":")
    try:
        seed = int(seed_text) if seed_text else DEFAULT_SEED
    except ValueError:
        raise CheckpointError(f"--checkpoint {source!r}: the seed must be an integer, e.g. synthetic:7") from None
    if seed < 0:
        raise CheckpointError(f"--checkpoint {source!r}: the seed must not be negative")
    path = synthetic_checkpoint(seed, cache_root() / "synthetic")
    details = {"seed": seed, "recipe": "seeded random init + BatchNorm statistics re-estimated on photos"}
    return Checkpoint(f"synthetic:{seed}", "synthetic", path, sha256_file(path), False, details)


def _gcs(source: str) -> Checkpoint:
    try:
        uri = parse_gs_uri(source)
        if not uri.name:
            raise StorageError(f"{source}: names a bucket, not an object")
        path = download_cached(uri, cache_root() / "gcs")
    except StorageError as exc:
        raise CheckpointError(f"cannot read checkpoint {exc}") from None
    generation = path.name.rpartition("@")[2]
    return Checkpoint(source, "gcs", path, sha256_file(path), True, {"generation": generation})


def _local(source: str) -> Checkpoint:
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {source!r} not found (expected a file path, gs://bucket/object, official or synthetic[:SEED])"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {source!r} is not a file")
    return Checkpoint(str(path), "file", path.resolve(), sha256_file(path), True)


def load_state_dict(checkpoint: Checkpoint, expected: dict[str, Any]) -> dict[str, Any]:
    """Load the checkpoint (weights only, no arbitrary pickles) and check it fits the model.

    ``expected`` maps the model's state-dict keys to their shapes.
    """
    import torch

    try:
        loaded = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler raises arbitrary errors on garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{checkpoint.path} is not a readable PyTorch checkpoint ({first[:200]})") from None
    state = _unwrap(loaded)
    if state is None:
        raise CheckpointError(f"{checkpoint.path} holds a {type(loaded).__name__}, not a state dict")
    _check_keys(checkpoint.path, state, expected)
    return state


def _unwrap(loaded: Any) -> dict[str, Any] | None:
    """A plain state dict, or one nested under 'state_dict' or 'model' (training checkpoints)."""
    import torch

    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return loaded
    return None


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_keys(path: Path, state: dict[str, Any], expected: dict[str, Any]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} keys with the wrong shape ({_names(wrong_shape)})")
    if problems:
        raise CheckpointError(f"{path} does not fit InSPyReNet_SwinB: " + "; ".join(problems))
