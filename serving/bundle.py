"""The bundle: a directory holding ``manifest.json`` (serving.manifest) and the files it lists.

The manifest is written last, so a manifest that exists describes a finished
build. A reader trusts a file only after its sha256 matches the manifest, and
a path only if it stays inside the bundle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from serving.atomic_files import write_json_atomic
from serving.errors import UserError
from serving.manifest import MANIFEST_NAME, Artifact, FileEntry, Manifest, ManifestError

_CHUNK = 4 * 1024 * 1024


class BundleError(UserError):
    """A bundle that cannot be trusted: missing, malformed or tampered with."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its manifest (``artifacts``: the manifest's, unless a check narrows them)."""

    root: Path
    manifest: Manifest
    artifacts: tuple[Artifact, ...]

    @property
    def mode(self) -> str:
        return self.manifest.mode

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.manifest.input.size

    @property
    def production_ready(self) -> bool:
        return self.manifest.production_ready

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.file

    def artifact(self, name: str) -> Artifact | None:
        """The servable artifact called ``name`` (its backend, or its label: 'onnxruntime-int8'), if there is one."""
        return next((a for a in self.artifacts if a.name == name and a.servable), None)

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


def read_manifest(root: Path) -> Manifest:
    """The bundle's manifest, checked (kind, schema version, every field's type); BundleError in one line."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{path}: no manifest (not a bundle, or its build did not finish)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    try:
        return Manifest.from_json(data)
    except ManifestError as exc:
        raise BundleError(f"{path}: {exc}") from None


def write_manifest(root: Path, manifest: Manifest) -> None:
    write_json_atomic(Path(root) / MANIFEST_NAME, manifest.to_json())


def load_bundle(root: Path | str, verify: bool = True) -> Bundle:
    """Read a bundle's manifest; with ``verify``, check every file's size and sha256."""
    root = Path(root)
    manifest = read_manifest(root)
    for artifact in manifest.artifacts:
        for entry in artifact.files:
            if not is_inside(root, entry.file):
                raise BundleError(f"{root / MANIFEST_NAME}: file path {entry.file!r} leaves the bundle")
    bundle = Bundle(root=root, manifest=manifest, artifacts=tuple(manifest.artifacts))
    if verify:
        bundle.verify_all()
    return bundle
