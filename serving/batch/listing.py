"""Which files of a listing are images, what each one's output is called, and which task does it.

Pure functions over a listing, so every task of a Cloud Run Job computes the
same plan from the same listing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from serving.errors import UserError

# Images by extension (any case). A file without an extension is a candidate too: its content
# decides (a scanner's or a camera's dump often has none). Other files are not looked at.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
OUTPUT_EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
_SHARD = re.compile(r"^(\d{1,6})/(\d{1,6})$")


class ShardError(UserError, ValueError):
    """A shard specification that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """One file under SRC: its path relative to SRC (POSIX), size in bytes, and version.

    ``version``: the object's generation on Cloud Storage; empty for a local
    file, whose content hash is taken when it is read.
    """

    path: str
    size: int
    version: str = ""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def is_candidate(path: str) -> bool:
    """An image by its extension, or a file with none (decided by its content when read)."""
    suffix = PurePosixPath(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix == ""


def output_path(path: str, fmt: str) -> str:
    """``a/b/photo.jpg`` -> ``a/b/photo.png``: the same relative path with the output format's extension."""
    pure = PurePosixPath(path)
    stem = pure.with_suffix("") if pure.suffix.lower() in IMAGE_EXTENSIONS else pure
    return f"{stem}{OUTPUT_EXTENSIONS[fmt]}"


def images(listing: list[Source]) -> list[Source]:
    """The candidates of a listing, sorted by path: the order every task agrees on."""
    return sorted((s for s in listing if is_candidate(s.path)), key=lambda s: s.path)


def collisions(sources: list[Source], fmt: str) -> dict[str, str]:
    """{path: the earlier path whose output has the same name} (``photo.jpg`` and ``photo.png`` -> one PNG)."""
    first: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for source in sources:
        name = output_path(source.path, fmt)
        if name in first:
            clashes[source.path] = first[name]
        else:
            first[name] = source.path
    return clashes


def take_shard(sources: list[Source], shard: Shard) -> list[Source]:
    """Every ``count``-th source from ``index``: balanced (sizes differ by at most one), covering each once."""
    return sources[shard.index :: shard.count]


def listing_digest(sources: list[Source]) -> str:
    """A hash of the sorted listing: tasks that report the same one split the same work."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"{source.path}\0{source.size}\0{source.version}\n".encode())
    return digest.hexdigest()[:16]


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N."""
    match = _SHARD.match(text.strip())
    if not match:
        raise ShardError(f"--shard must be INDEX/COUNT like 0/3; got {text!r}")
    return _checked(int(match.group(1)), int(match.group(2)), "--shard")


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard:
    """Cloud Run Jobs' CLOUD_RUN_TASK_INDEX / CLOUD_RUN_TASK_COUNT; one shard (0/1) when neither is set."""
    environ = os.environ if environ is None else environ
    index, count = environ.get("CLOUD_RUN_TASK_INDEX"), environ.get("CLOUD_RUN_TASK_COUNT")
    if index is None and count is None:
        return Shard(0, 1)
    if index is None or count is None:
        raise ShardError("set both CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT, or neither")
    for name, value in (("CLOUD_RUN_TASK_INDEX", index), ("CLOUD_RUN_TASK_COUNT", count)):
        if not (value.isascii() and value.isdigit() and len(value) <= 6):
            raise ShardError(f"{name} must be a whole number; got {value!r}")
    return _checked(int(index), int(count), "CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT")


def _checked(index: int, count: int, name: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"{name}: the index must be from 0 to count - 1 and the count at least 1; got {index}/{count}")
    return Shard(index, count)
