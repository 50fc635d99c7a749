"""Bundles on Cloud Storage: publish under a version key, pull with verification.

Layout under ``gs://BUCKET/PREFIX``::

    VERSION/manifest.json        uploaded last: a version without it is incomplete
    VERSION/<files the manifest lists>, VERSION/parity/...
    latest                       text object naming the newest complete VERSION

VERSION is ``MODE-<checkpoint sha256[:12]>-<build time, UTC>``. Publishing the
same version again is a no-op. Pulling downloads into a temporary directory,
verifies every file's sha256 against the manifest, and only then replaces the
target directory.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

from serving.atomic_files import replace_directory
from serving.bundle import BundleError, is_inside, load_bundle, read_manifest
from serving.manifest import MANIFEST_NAME
from serving.store.gcs import Deadline, GsUri, StorageError, client, download_chunked, parse_gs_uri, storage_call

LATEST = "latest"


def _bundle_files(bundle_dir: Path) -> list[Path]:
    """Files to publish: every file the manifest lists, then the parity report (manifest itself last)."""
    bundle = load_bundle(bundle_dir, verify=True)
    files = [bundle.path(entry) for artifact in bundle.artifacts for entry in artifact.files]
    parity = bundle_dir / "parity"
    if parity.is_dir():
        files += sorted(p for p in parity.rglob("*") if p.is_file())
    return files


def _bucket(uri: GsUri, deadline: Deadline | None = None):
    request = deadline.request() if deadline else {}
    bucket = storage_call(uri, lambda: client().lookup_bucket(uri.bucket, **request))
    if bucket is None:
        raise StorageError(f"gs://{uri.bucket}: bucket not found (create it first, or check the name)")
    return bucket


def publish(bundle_dir: Path, destination: str, progress=lambda message: None) -> tuple[str, bool]:
    """Upload the bundle; return (version URI, whether anything was uploaded)."""
    bundle_dir = Path(bundle_dir)
    prefix = parse_gs_uri(destination)
    bucket = _bucket(prefix)
    manifest_path = bundle_dir / MANIFEST_NAME
    version, remote_manifest = _remote_manifest(bucket, prefix, bundle_dir)
    if storage_call(version, remote_manifest.exists):
        existing = storage_call(version, remote_manifest.download_as_bytes)
        if existing == manifest_path.read_bytes():
            _move_latest(bucket, prefix, version)
            return str(version), False
        raise StorageError(f"{version} already holds a different manifest; refusing to overwrite a published version")
    for path in _bundle_files(bundle_dir):
        name = path.relative_to(bundle_dir).as_posix()
        progress(f"uploading {name}")
        target = version.child(name)
        # checksum="crc32c": the client checks the upload against what the server stored.
        storage_call(target, partial(bucket.blob(target.name).upload_from_filename, str(path), checksum="crc32c"))
    progress(f"uploading {MANIFEST_NAME}")
    storage_call(version, lambda: remote_manifest.upload_from_filename(str(manifest_path), checksum="crc32c"))
    _move_latest(bucket, prefix, version)
    return str(version), True


def published_version(bundle_dir: Path, destination: str) -> str | None:
    """The URI of ``bundle_dir``'s version under ``destination`` if one is published there (any manifest), else None.

    A retried build task asks this before redoing work: the engine it would
    build again is never byte-identical, and a published version is never
    overwritten.
    """
    prefix = parse_gs_uri(destination)
    version, remote_manifest = _remote_manifest(_bucket(prefix), prefix, Path(bundle_dir))
    return str(version) if storage_call(version, remote_manifest.exists) else None


def _remote_manifest(bucket, prefix: GsUri, bundle_dir: Path):
    """The version URI ``bundle_dir`` publishes to under ``prefix``, and the blob of its manifest there."""
    version = prefix.child(read_manifest(bundle_dir).version_key)
    return version, bucket.blob(version.child(MANIFEST_NAME).name)


def _move_latest(bucket, prefix: GsUri, version: GsUri) -> None:
    key = version.name.rsplit("/", 1)[-1]
    pointer = prefix.child(LATEST)
    storage_call(pointer, lambda: bucket.blob(pointer.name).upload_from_string(key, content_type="text/plain"))


DEFAULT_PULL_TIMEOUT = 900.0  # seconds: a 1 GB bundle at 2 MB/s still fits


class PullProgress:
    """What a pull reports: the bytes it will fetch, each file as it starts, bytes as they arrive."""

    def begin(self, total_bytes: int, files: int) -> None:
        pass

    def file(self, name: str, size: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


def resolve_version(uri: str, deadline: Deadline | None = None) -> GsUri:
    """``gs://B/PREFIX/latest`` or ``gs://B/PREFIX/VERSION`` (or ``gs://B/PREFIX``, meaning latest)."""
    deadline = deadline or Deadline(DEFAULT_PULL_TIMEOUT, "resolving the version")
    parsed = parse_gs_uri(uri)
    bucket = _bucket(parsed, deadline)
    last = parsed.name.rsplit("/", 1)[-1] if parsed.name else ""
    if last != LATEST:
        manifest = bucket.blob(parsed.child(MANIFEST_NAME).name)
        if storage_call(parsed, partial(manifest.exists, **deadline.request())):
            return parsed
        pointer_prefix = parsed
    else:
        pointer_prefix = GsUri(parsed.bucket, parsed.name.rsplit("/", 1)[0] if "/" in parsed.name else "")
    pointer = pointer_prefix.child(LATEST)
    blob = bucket.blob(pointer.name)
    if not storage_call(pointer, partial(blob.exists, **deadline.request())):
        raise StorageError(f"{uri}: no published bundle there (no {MANIFEST_NAME} and no '{LATEST}' pointer)")
    key = storage_call(pointer, partial(blob.download_as_bytes, **deadline.request())).decode().strip()
    return pointer_prefix.child(key)


def pull(
    uri: str,
    target: Path,
    progress: PullProgress | None = None,
    reports: bool = True,
    timeout: float = DEFAULT_PULL_TIMEOUT,
) -> Path:
    """Download, verify, then move the bundle into ``target``; ``target`` is untouched on any failure.

    The whole pull finishes or fails (one StorageError line) within ``timeout``
    seconds, plus at most one request's read timeout. ``reports=False`` leaves
    out the parity report (``parity/``, about a hundred images): a server needs
    only the manifest and the artifacts.
    """
    progress = progress or PullProgress()
    deadline = Deadline(timeout, "the pull")
    version = resolve_version(uri, deadline)
    bucket = _bucket(version, deadline)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        manifest_blob = bucket.blob(version.child(MANIFEST_NAME).name)
        if not storage_call(version, partial(manifest_blob.exists, **deadline.request())):
            raise StorageError(f"{version}: incomplete or missing version (no {MANIFEST_NAME})")
        storage_call(
            version, partial(manifest_blob.download_to_filename, str(staging / MANIFEST_NAME), **deadline.request())
        )
        try:  # the manifest's own checks (schema, every path inside the bundle) before any other download
            listed = load_bundle(staging, verify=False)
        except BundleError as exc:
            raise StorageError(f"{version}: refusing the manifest: {exc}") from None
        files = [(entry.file, entry.bytes) for artifact in listed.artifacts for entry in artifact.files]
        if reports:
            files += _report_files(bucket, version, staging, deadline)
        progress.begin(sum(size for _, size in files), len(files))
        for name, size in files:
            progress.file(name, size)
            remote = version.child(name)
            download_chunked(remote, bucket.blob(remote.name), size, staging / name, deadline, progress.advance)
        try:
            load_bundle(staging, verify=True)
        except BundleError as exc:
            raise StorageError(f"{version}: refusing the download: {exc}") from None
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _report_files(bucket, version: GsUri, staging: Path, deadline: Deadline) -> list[tuple[str, int]]:
    """(name inside the bundle, size) of every object of the version's parity report."""
    prefix = version.child("parity").name + "/"
    blobs = storage_call(version, lambda: list(bucket.list_blobs(prefix=prefix, **deadline.request())))
    files = []
    for blob in blobs:
        name = blob.name[len(version.name) + 1 :]
        if not is_inside(staging, name):  # a remote listing is outside input too
            raise StorageError(f"{version}: refusing the object {blob.name!r}: its name leaves the bundle")
        files.append((name, int(blob.size or 0)))
    return files
