"""The bundle: the contract between the build pipeline and the server.

A bundle is a directory holding ``manifest.json`` and the files it lists. The
manifest is written last, so a manifest that exists describes a finished build.
A reader trusts a file only after its sha256 matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
BUNDLE_KIND = "inspyrenet-bundle"
BACKENDS = ("tensorrt", "torchscript", "onnxruntime")
SERVE_ROLE = "serve"
TENSORRT_SOURCE_ROLE = "tensorrt-source"

_CHUNK = 4 * 1024 * 1024


class BundleError(Exception):
    """A bundle that cannot be trusted: missing, malformed or tampered with."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle, as the manifest records it."""

    file: str
    sha256: str
    bytes: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        return cls(file=str(data["file"]), sha256=str(data["sha256"]), bytes=int(data["bytes"]))


@dataclass(frozen=True)
class Artifact:
    """One runnable model file (plus any side files, e.g. ONNX external data)."""

    backend: str
    precision: str
    device: str
    main: FileEntry
    extra_files: tuple[FileEntry, ...]
    max_batch: int
    record: dict[str, Any] = field(repr=False, compare=False)

    @property
    def file(self) -> str:
        return self.main.file

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return (self.main, *self.extra_files)

    @property
    def parity(self) -> dict[str, Any] | None:
        return self.record.get("parity")

    @property
    def target(self) -> dict[str, Any] | None:
        return self.record.get("target")

    @property
    def role(self) -> str:
        """'serve' (the default), or 'tensorrt-source': the fp16 graph the engine is compiled from."""
        return str(self.record.get("role", SERVE_ROLE))

    @property
    def servable(self) -> bool:
        return self.role == SERVE_ROLE

    @property
    def label(self) -> str:
        """A name unique within the bundle: the backend, or e.g. 'onnxruntime-fp16' for a second ONNX file."""
        return str(self.record.get("label") or self.backend)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            backend=str(data["backend"]),
            precision=str(data["precision"]),
            device=str(data["device"]),
            main=FileEntry.from_dict(data),
            extra_files=tuple(FileEntry.from_dict(e) for e in data.get("extra_files", [])),
            max_batch=int(data.get("max_batch", 1)),
            record=data,
        )


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    artifacts: tuple[Artifact, ...]

    @property
    def mode(self) -> str:
        return str(self.manifest["mode"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        _, _, height, width = self.manifest["input"]["shape"]
        return int(height), int(width)

    @property
    def production_ready(self) -> bool:
        return bool(self.manifest.get("production_ready", False))

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.file

    def artifact(self, backend: str) -> Artifact | None:
        """The servable artifact of ``backend``, if the bundle has one."""
        for artifact in self.artifacts:
            if artifact.backend == backend and artifact.servable:
                return artifact
        return None

    def by_role(self, role: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.role == role), None)

    def verify(self, artifact: Artifact) -> None:
        """Raise BundleError unless every file of ``artifact`` exists with its recorded sha256."""
        for entry in artifact.files:
            path = self.path(entry)
            if not path.is_file():
                raise BundleError(f"{path}: listed in the manifest but missing")
            size = path.stat().st_size
            if size != entry.bytes:
                raise BundleError(f"{path}: {size} bytes, the manifest says {entry.bytes}: refusing it")
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise BundleError(
                    f"{path}: sha256 {actual[:12]}... does not match the manifest's {entry.sha256[:12]}...: "
                    "the file was changed after the build; refusing it"
                )

    def verify_all(self) -> None:
        for artifact in self.artifacts:
            self.verify(artifact)


def is_inside(root: Path, name: str) -> bool:
    """Whether ``root / name`` stays inside ``root``: a relative POSIX path with no '..', and no
    link along it (a file or a folder) that points out of ``root``."""
    parts = name.split("/")
    if not name or "\\" in name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return False
    if ":" in parts[0]:  # a drive or a URL scheme, never a file of ours
        return False
    base = Path(root).resolve()
    return (base / name).resolve().is_relative_to(base)


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{path}: no manifest (not a bundle, or its build did not finish)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{path}: not an InSPyReNet bundle manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema version {version!r}, this reader understands {SCHEMA_VERSION}")
    for key in ("mode", "input", "output", "checkpoint", "artifacts"):
        if key not in manifest:
            raise BundleError(f"{path}: manifest has no '{key}'")
    return manifest


def load_bundle(root: Path | str, verify: bool = True) -> Bundle:
    """Read a bundle's manifest; with ``verify``, check every file's size and sha256."""
    root = Path(root)
    manifest = read_manifest(root)
    try:
        artifacts = tuple(Artifact.from_dict(a) for a in manifest["artifacts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST_NAME}: malformed artifact entry ({exc!r})") from None
    for artifact in artifacts:
        for entry in artifact.files:
            if not is_inside(root, entry.file):
                raise BundleError(f"{root / MANIFEST_NAME}: file path {entry.file!r} leaves the bundle")
    bundle = Bundle(root=root, manifest=manifest, artifacts=artifacts)
    if verify:
        bundle.verify_all()
    return bundle
