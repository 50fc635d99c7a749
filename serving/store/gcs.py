"""Cloud Storage access (google-cloud-storage, standard credential discovery).

``STORAGE_EMULATOR_HOST`` points the client at an emulator (the tests use
fake-gcs-server); the client then needs no credentials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from serving.atomic_files import atomic_path
from serving.errors import UserError


class StorageError(UserError):
    """A bucket or object that cannot be read or written; the message is one line."""


# (connect, read) seconds for every request of a transfer: a server that stops answering
# (the cause of a pull that never ended: an emulator blocked on its own log pipe) fails the
# request after 30 s, then the request's retries, which end with the transfer's deadline.
REQUEST_TIMEOUT = (10.0, 30.0)
CHUNK_BYTES = 64 * 2**20  # one ranged request; progress and the deadline are checked between them
MAX_RETRY_SECONDS = 120.0


class Deadline:
    """The time a whole transfer has. Each request retries until min(2 min, the time left)."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = float(seconds), what
        self.ends = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def check(self, uri: GsUri | str, done: str = "") -> None:
        if self.remaining() <= 0:
            where = f" ({done})" if done else ""
            raise StorageError(f"{uri}: {self.what} did not finish within its {self.seconds:.0f} s limit{where}")

    def request(self) -> dict:
        """Keyword arguments for one client call: its timeout and a retry that ends with the deadline."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        left = max(1.0, min(MAX_RETRY_SECONDS, self.remaining()))
        return {"timeout": REQUEST_TIMEOUT, "retry": DEFAULT_RETRY.with_timeout(left)}


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


def download_chunked(uri: GsUri, blob, size: int, dest: Path, deadline: Deadline, advance=lambda n: None) -> None:
    """Download ``size`` bytes of ``blob`` to ``dest`` atomically, in ranged requests of CHUNK_BYTES.

    Between requests the deadline is checked and ``advance(nbytes)`` reports
    progress; the caller verifies the file's sha256 afterwards.
    """
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        done = 0
        while done < size:
            deadline.check(uri, f"{done / 1e6:.0f} of {size / 1e6:.0f} MB of this object")
            end = min(done + CHUNK_BYTES, size) - 1
            read = partial(blob.download_as_bytes, start=done, end=end, checksum=None, **deadline.request())
            data = storage_call(uri, partial(_read_range, read))
            if not data:
                raise StorageError(f"{uri}: refusing the download: the object ends after {done} of its {size} bytes")
            out.write(data)
            done += len(data)
            advance(len(data))


def _read_range(read) -> bytes:
    """One ranged read; a range past the object's end (416) reads as nothing: the object is shorter."""
    from google.api_core.exceptions import RequestRangeNotSatisfiable

    try:
        return read()
    except RequestRangeNotSatisfiable:
        return b""


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
