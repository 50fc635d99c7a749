"""Where a batch reads images and writes cutouts: a local folder or a Cloud Storage prefix.

Both keep, with every output, a *record* (string key/values) of what it was
made from: the source's path and version (its generation on Cloud Storage,
its sha256 locally) and a fingerprint of the source, the parameters and the
model. A rerun compares fingerprints and skips what is done.

- Cloud Storage: the record is the object's custom metadata, sent in the same
  upload as the bytes; an object appears whole, with its record, or not at
  all. The records of DST are read with one listing.
- Local folder: the output is written to a temporary file and renamed; the
  record goes to ``DST/.inspyrenet-batch/records/<output>.json`` afterwards,
  also atomically. An output without its record (a crash between the two) is
  made again.

Hidden files and folders (a name starting with ".") are never listed: the
batch's own state and temporary files live under such names.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from serving.atomic_files import write_bytes_atomic, write_json_atomic
from serving.batch import BatchError
from serving.batch.listing import Source
from serving.bundle import is_inside
from serving.store.gcs import GsUri, StorageError, client, parse_gs_uri, storage_call

STATE_DIR = ".inspyrenet-batch"


class LocationError(BatchError):
    """SRC or DST cannot be used; one line."""


class SourceUnreadableError(Exception):
    """A listed image that is gone, replaced or unreadable; the batch lists it as failed and goes on."""


def safe_relative(path: str) -> bool:
    """A relative POSIX path of plain names: nothing a remote listing could use to leave a folder."""
    parts = path.split("/")
    return (
        bool(path)
        and "\\" not in path
        and "\0" not in path
        and not path.startswith("/")
        and not any(part in ("", ".", "..") for part in parts)
    )


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


class LocalFolder:
    def __init__(self, root: Path):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def key(self) -> tuple[str, str]:
        return "file", str(self.root.resolve())

    def check_source(self) -> None:
        if not self.root.is_dir():
            raise LocationError(f"{self.root}: no such folder")

    def list_sources(self) -> list[Source]:
        """Regular files under the folder (symbolic links are not followed), hidden ones left out."""
        sources = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(folder) / name
                relative = path.relative_to(self.root).as_posix()
                if _hidden(relative) or path.is_symlink() or not path.is_file():
                    continue
                sources.append(Source(relative, path.stat().st_size))
        return sources

    def read(self, source: Source) -> tuple[bytes, str]:
        """The file's bytes and their sha256 (its version)."""
        try:
            data = (self.root / source.path).read_bytes()
        except FileNotFoundError:
            raise SourceUnreadableError("gone since the listing") from None
        except OSError as exc:
            raise SourceUnreadableError(f"cannot be read: {exc.strerror or exc}") from None
        return data, "sha256:" + hashlib.sha256(data).hexdigest()

    def prepare_outputs(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocationError(f"{self.root}: cannot create the folder: {exc.strerror or exc}") from None

    def _record_path(self, name: str) -> Path:
        return self.root / STATE_DIR / "records" / f"{name}.json"

    def record(self, name: str) -> dict[str, str] | None:
        """The record of the output ``name`` if both exist and the output has the recorded size."""
        try:
            record = json.loads(self._record_path(name).read_text())
            size = (self.root / name).stat().st_size
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("inspyrenet-bytes") != str(size):
            return None
        return record

    def write(self, name: str, body: bytes, media_type: str, record: dict[str, str]) -> None:
        if not is_inside(self.root, name):
            raise LocationError(f"{name!r}: the output would leave {self.root}")
        try:
            write_bytes_atomic(self.root / name, body)
            write_json_atomic(self._record_path(name), {**record, "inspyrenet-bytes": str(len(body))})
        except OSError as exc:  # a full disk, a folder in the way: the task stops, a rerun goes on from here
            raise LocationError(f"{self.root / name}: cannot write: {exc.strerror or exc}") from None

    def write_summary(self, name: str, summary: dict) -> str:
        path = self.root / STATE_DIR / name
        try:
            write_json_atomic(path, summary)
        except OSError as exc:
            raise LocationError(f"{path}: cannot write: {exc.strerror or exc}") from None
        return str(path)


class GcsPrefix:
    def __init__(self, uri: GsUri):
        self.uri = uri
        self._local = threading.local()
        self._records: dict[str, dict[str, str]] = {}

    def __str__(self) -> str:
        return str(self.uri)

    def key(self) -> tuple[str, str]:
        return f"gs://{self.uri.bucket}", self.uri.name

    def _bucket(self):
        """One client per thread: the storage client's HTTP session is not shared between threads."""
        if getattr(self._local, "bucket", None) is None:
            self._local.bucket = client().bucket(self.uri.bucket)
        return self._local.bucket

    def _name(self, relative: str) -> str:
        return self.uri.child(relative).name

    def _list(self, prefix: str):
        start = f"{prefix}/" if prefix else ""
        return storage_call(
            self.uri,
            lambda: [(blob.name[len(start) :], blob) for blob in client().list_blobs(self.uri.bucket, prefix=start)],
        )

    def check_source(self) -> None:
        bucket = storage_call(self.uri, lambda: client().lookup_bucket(self.uri.bucket))
        if bucket is None:
            raise LocationError(f"gs://{self.uri.bucket}: bucket not found")

    def list_sources(self) -> list[Source]:
        """Objects under the prefix with their generations; folder placeholders and hidden names left out.

        A name that is not a plain relative path (``..``, empty parts) is
        listed too; the batch refuses it as failed, with the reason.
        """
        return [
            Source(relative, blob.size or 0, str(blob.generation))
            for relative, blob in self._list(self.uri.name)
            if relative and not relative.endswith("/") and not _hidden(relative)
        ]

    def read(self, source: Source) -> tuple[bytes, str]:
        """The listed generation's bytes (the client checks their checksum) and that generation."""
        from google.api_core.exceptions import NotFound

        uri = self.uri.child(source.path)

        def download() -> bytes:
            blob = self._bucket().blob(self._name(source.path), generation=int(source.version))
            try:
                return blob.download_as_bytes(checksum="auto")
            except NotFound:
                raise SourceUnreadableError("gone or replaced since the listing") from None

        return storage_call(uri, download), source.version

    def prepare_outputs(self) -> None:
        """Read every output's record under DST with one listing."""
        self.check_source()
        self._records = {relative: dict(blob.metadata or {}) for relative, blob in self._list(self.uri.name)}

    def record(self, name: str) -> dict[str, str] | None:
        return self._records.get(name)

    def write(self, name: str, body: bytes, media_type: str, record: dict[str, str]) -> None:
        """One upload with the record as metadata: the object appears complete or not at all."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        uri = self.uri.child(name)

        def upload() -> None:
            blob = self._bucket().blob(uri.name)
            blob.metadata = {**record, "inspyrenet-bytes": str(len(body))}
            # Retried on transient errors: the same bytes to the same name, so a repeat is harmless.
            blob.upload_from_string(body, content_type=media_type, checksum="crc32c", retry=DEFAULT_RETRY)

        storage_call(uri, upload)

    def write_summary(self, name: str, summary: dict) -> str:
        uri = self.uri.child(STATE_DIR, name)
        data = (json.dumps(summary, indent=2) + "\n").encode()
        storage_call(
            uri,
            lambda: (
                self._bucket()
                .blob(uri.name)
                .upload_from_string(data, content_type="application/json", checksum="crc32c")
            ),
        )
        return str(uri)


def open_location(text: str) -> LocalFolder | GcsPrefix:
    if text.startswith("gs://"):
        try:
            return GcsPrefix(parse_gs_uri(text))
        except StorageError as exc:
            raise LocationError(str(exc)) from None
    if "://" in text:
        raise LocationError(f"{text!r}: a local folder or gs://BUCKET/PREFIX")
    return LocalFolder(Path(text))


def overlap(source: LocalFolder | GcsPrefix, destination: LocalFolder | GcsPrefix) -> bool:
    """Whether one location holds the other (outputs would be read as inputs, or overwrite them)."""
    (src_scheme, src), (dst_scheme, dst) = source.key(), destination.key()
    if src_scheme != dst_scheme:
        return False
    sep = os.sep if src_scheme == "file" else "/"
    src_dir, dst_dir = (f"{p.rstrip(sep)}{sep}" if p else "" for p in (src, dst))
    return src_dir.startswith(dst_dir) or dst_dir.startswith(src_dir)
