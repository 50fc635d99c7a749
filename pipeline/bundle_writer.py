"""Write a bundle atomically: files into a staging directory, manifest last, one swap.

A build that fails half-way leaves the previous bundle (or nothing) in place,
never a manifest that points at missing or stale files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from pipeline.errors import BuildError
from serving.atomic_files import replace_directory
from serving.bundle import sha256_file, write_manifest
from serving.manifest import MANIFEST_NAME, Artifact, FileEntry, Manifest


def file_entry(path: Path, name: str | None = None) -> FileEntry:
    """The manifest's entry of a written file (``name``: its path inside the bundle, default its file name)."""
    return FileEntry(file=name or path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


class BundleWriter:
    """Use as a context manager; ``commit(manifest)`` publishes, leaving the block without it discards."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        self._check_target()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=self.out.parent))
        self.committed = False

    def _check_target(self) -> None:
        if not self.out.exists():
            return
        if not self.out.is_dir():
            raise BuildError(f"--out {self.out} exists and is not a directory")
        if any(self.out.iterdir()) and not (self.out / MANIFEST_NAME).is_file():
            raise BuildError(f"--out {self.out} is not empty and holds no bundle; refusing to replace it")

    def path(self, name: str) -> Path:
        return self.staging / name

    def keep_files_of(self, bundle_dir: Path, leave_out: AbstractSet[str] = frozenset()) -> None:
        """Start from an existing bundle: hard links to its files (copies across file systems), manifest aside."""
        source = Path(bundle_dir).resolve()
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_symlink() or not path.is_file() or relative.as_posix() in leave_out | {MANIFEST_NAME}:
                continue
            target = self.staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)

    def artifact(self, file: str, backend: str, precision: str, device: str, **fields: Any) -> Artifact:
        """The manifest entry of a file already written into the staging directory (side files found by name)."""
        extras = sorted(p for p in self.staging.iterdir() if p.name.startswith(file) and p.name != file)
        return Artifact(
            **self.file_entry(file).to_json(),
            backend=backend,
            precision=precision,
            device=device,
            extra_files=[file_entry(p) for p in extras],
            **fields,
        )

    def file_entry(self, name: str) -> FileEntry:
        return file_entry(self.path(name), name)

    def commit(self, manifest: Manifest) -> Path:
        """Write the manifest last, then swap the staging directory into place."""
        write_manifest(self.staging, manifest)
        replace_directory(self.staging, self.out)
        self.committed = True
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self.committed:
            self.discard()
