"""Server settings: every one an environment variable with a default.

The CLI's flags override the environment; docs/http-api.md lists every variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from itertools import chain
from pathlib import Path

from serving.backends import ARTIFACT_NAMES
from serving.errors import UserError

BACKEND_CHOICES = ("auto", *ARTIFACT_NAMES)
_HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


class SettingsError(UserError, ValueError):
    """A setting with a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    artifacts: Path = field(default=Path("artifacts/fast"), metadata={"env": "INSPYRENET_ARTIFACTS"})
    artifacts_uri: str | None = field(default=None, metadata={"env": "INSPYRENET_ARTIFACTS_URI"})
    backend: str = field(default="auto", metadata={"env": "INSPYRENET_BACKEND"})
    host: str = field(default="0.0.0.0", metadata={"env": "INSPYRENET_HOST"})
    port: int = field(default=8080, metadata={"env": "PORT"})
    workers: int = field(default=1, metadata={"env": "INSPYRENET_WORKERS"})
    # CPU threads one inference may use (ONNX Runtime's intra-op threads); 0: the runtime's default.
    threads: int = field(default=0, metadata={"env": "INSPYRENET_THREADS"})
    max_batch_size: int = field(default=1, metadata={"env": "INSPYRENET_MAX_BATCH_SIZE"})
    batch_timeout: float = field(default=0.01, metadata={"env": "INSPYRENET_BATCH_TIMEOUT"})
    max_pixels: int = field(default=40_000_000, metadata={"env": "INSPYRENET_MAX_PIXELS"})
    max_body_bytes: int = field(default=30 * 1024 * 1024, metadata={"env": "INSPYRENET_MAX_BODY_BYTES"})
    request_timeout: float = field(default=60.0, metadata={"env": "INSPYRENET_REQUEST_TIMEOUT"})
    max_in_flight: int = field(default=0, metadata={"env": "INSPYRENET_MAX_IN_FLIGHT"})
    body_timeout: float = field(default=60.0, metadata={"env": "INSPYRENET_BODY_TIMEOUT"})
    header_timeout: float = field(default=10.0, metadata={"env": "INSPYRENET_HEADER_TIMEOUT"})
    max_header_bytes: int = field(default=16 * 1024, metadata={"env": "INSPYRENET_MAX_HEADER_BYTES"})
    refine_max_pixels: int = field(default=12_000_000, metadata={"env": "INSPYRENET_REFINE_MAX_PIXELS"})
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "INSPYRENET_CORS_ORIGINS"})
    api_key: str | None = field(default=None, metadata={"env": "LIT_SERVER_API_KEY"})
    # POST /v1.0/removebg's image_url and bg_image_url: off unless hosts are listed (names, *.suffix or *).
    removebg_url_hosts: tuple[str, ...] = field(default=(), metadata={"env": "INSPYRENET_REMOVEBG_URL_HOSTS"})
    removebg_url_timeout: float = field(default=15.0, metadata={"env": "INSPYRENET_REMOVEBG_URL_TIMEOUT"})
    # On: listed hosts may resolve to private addresses (a private network's own image hosts). Off by default.
    removebg_url_allow_private: bool = field(default=False, metadata={"env": "INSPYRENET_REMOVEBG_URL_ALLOW_PRIVATE"})
    metrics_public: bool = field(default=False, metadata={"env": "INSPYRENET_METRICS_PUBLIC"})
    docs: bool = field(default=False, metadata={"env": "INSPYRENET_DOCS"})
    verify: bool = field(default=True, metadata={"env": "INSPYRENET_VERIFY"})
    # On: an artifact that fails to verify, open or warm up is skipped (one warning line) for the next one;
    # off: that is an error. Artifacts that cannot run on this machine (runtime, GPU, engine target) are
    # skipped either way.
    fallbacks: bool = field(default=False, metadata={"env": "INSPYRENET_FALLBACKS"})
    # On (development only, loudly logged): serve a bundle whose parity validation is pending or failed.
    allow_unvalidated: bool = field(default=False, metadata={"env": "INSPYRENET_ALLOW_UNVALIDATED"})
    # On: serve only on a GPU backend, or exit before /health is ever 200 (a GPU service never serves on the CPU).
    require_gpu: bool = field(default=False, metadata={"env": "INSPYRENET_REQUIRE_GPU"})
    log_level: str = field(default="warning", metadata={"env": "INSPYRENET_LOG_LEVEL"})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        values = {}
        for item in fields(cls):
            raw = environ.get(item.metadata["env"])
            if raw is not None and raw != "":
                values[item.name] = _convert(item.name, item.metadata["env"], raw)
        settings = cls(**values)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SettingsError naming the first setting out of its range."""
        problem = next(chain(self._where_problems(), self._limit_problems()), None)
        if problem is not None:
            raise SettingsError(problem)

    def _where_problems(self) -> Iterator[str]:
        """What to serve and where: the bundle URI, the backend, the address, the key."""
        if self.artifacts_uri is not None and not self.artifacts_uri.startswith("gs://"):
            yield f"INSPYRENET_ARTIFACTS_URI must be a gs:// URI, got {self.artifacts_uri!r}"
        if self.backend not in BACKEND_CHOICES:
            yield f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {self.backend!r}"
        if not 1024 <= self.port <= 65535:
            yield f"port must be from 1024 to 65535 (LitServe's range), got {self.port}"
        if self.host not in ("0.0.0.0", "127.0.0.1", "::"):
            yield f"host must be 0.0.0.0, 127.0.0.1 or :: (LitServe's choices), got {self.host!r}"
        if self.api_key is not None and not self.api_key.isprintable():
            yield "LIT_SERVER_API_KEY must not hold control characters or line breaks"

    def _limit_problems(self) -> Iterator[str]:
        """Counts, sizes and timeouts, and the hosts remove.bg's image_url may fetch from."""
        for name in ("workers", "max_batch_size", "max_pixels", "max_body_bytes", "refine_max_pixels"):
            if getattr(self, name) < 1:
                yield f"{name} must be at least 1, got {getattr(self, name)}"
        if self.threads < 0:
            yield f"threads must be 0 (the runtime's default) or more, got {self.threads}"
        if self.max_in_flight < 0:
            yield f"max_in_flight must be 0 (automatic) or more, got {self.max_in_flight}"
        if self.max_header_bytes < 1024:
            yield f"max_header_bytes must be at least 1024, got {self.max_header_bytes}"
        if self.batch_timeout < 0 or min(self.request_timeout, self.body_timeout, self.header_timeout) <= 0:
            yield "batch_timeout must be >= 0; request_timeout, body_timeout and header_timeout > 0"
        if self.removebg_url_timeout <= 0:
            yield f"removebg_url_timeout must be > 0, got {self.removebg_url_timeout}"
        for host in self.removebg_url_hosts:
            if not _HOST_PATTERN.match(host):
                yield f"INSPYRENET_REMOVEBG_URL_HOSTS: {host!r} is not a host name, *.suffix or *"

    @property
    def in_flight_limit(self) -> int:
        """Requests admitted at once (running or queued); beyond it the answer is 503 at once.

        Automatic: four full batches per worker, one running and three waiting, so a
        burst queues for at most about three inference times before 503s begin.
        """
        return self.max_in_flight or 4 * self.workers * self.max_batch_size


def _convert(name: str, env: str, raw: str):
    kind = Settings.__dataclass_fields__[name].type
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes")
        if kind == "Path":
            return Path(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind}") from None
    return raw


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, field) rows for the documentation."""
    rows = []
    for item in fields(Settings):
        default = item.default
        rows.append((item.metadata["env"], "" if default in (None, ()) else str(default), item.name))
    return rows
