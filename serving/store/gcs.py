"""Cloud Storage access (google-cloud-storage, standard credential discovery).

``STORAGE_EMULATOR_HOST`` points the client at an emulator (the tests use
fake-gcs-server); the client then needs no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.atomic_files import atomic_path
from serving.errors import UserError


class StorageError(UserError):
    """A bucket or object that cannot be read or written; the message is one line."""


@dataclass(frozen=True)
class GsUri:
    bucket: str
    name: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.name}" if self.name else f"gs://{self.bucket}"

    def child(self, *parts: str) -> GsUri:
        name = "/".join(p.strip("/") for p in (self.name, *parts) if p.strip("/"))
        return GsUri(self.bucket, name)


def parse_gs_uri(uri: str) -> GsUri:
    if not uri.startswith("gs://"):
        raise StorageError(f"{uri!r} is not a gs:// URI")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket")
    return GsUri(bucket, name.strip("/"))


def client():
    """A storage client; errors in credential discovery become StorageError."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError as exc:
        raise StorageError(f"no Google Cloud credentials found ({_first_line(exc)})") from None


def describe_error(uri: GsUri | str, exc: Exception) -> str:
    """One line for a failed storage call, naming the object and the reason."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return f"{uri}: not found (check the bucket and object name)"
    if isinstance(exc, gexc.Forbidden):
        return f"{uri}: access denied ({_first_line(exc)})"
    if isinstance(exc, gexc.Unauthorized):
        return f"{uri}: not authorised ({_first_line(exc)})"
    return f"{uri}: {type(exc).__name__}: {_first_line(exc)}"


def storage_call(uri: GsUri, call):
    """Run ``call()``; any client, auth, transport or file error becomes one StorageError line."""
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError
    from requests.exceptions import RequestException

    try:
        return call()
    except StorageError:
        raise
    except (gexc.GoogleAPIError, GoogleAuthError, RequestException, OSError) as exc:
        raise StorageError(describe_error(uri, exc)) from None


def get_blob(uri: GsUri):
    """The object's metadata (generation, size, checksums); StorageError when it is not readable."""
    blob = storage_call(uri, lambda: client().bucket(uri.bucket).get_blob(uri.name))
    if blob is None:
        raise StorageError(f"{uri}: not found (check the bucket and object name)")
    return blob


def download_blob(uri: GsUri, blob, dest: Path) -> None:
    """Download ``blob`` atomically to ``dest``; the client checks the object's checksum."""

    def download() -> None:
        with atomic_path(dest) as tmp:
            blob.download_to_filename(str(tmp), checksum="auto")

    storage_call(uri, download)


def download_cached(uri: GsUri, cache_dir: Path) -> Path:
    """Download an object once per generation into ``cache_dir``; return the local path."""
    blob = get_blob(uri)
    local = Path(cache_dir) / uri.bucket / f"{uri.name}@{blob.generation}"
    if local.is_file() and local.stat().st_size == blob.size:
        return local
    download_blob(uri, blob, local)
    return local


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
