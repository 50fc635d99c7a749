"""The manifest: the typed contract between the build (its writer) and every reader.

One model per part of ``manifest.json``. The pipeline builds these objects and
writes them with ``to_json``; the server, the store and the checks read them
with ``from_json``, which checks the kind and the schema version first, then
every field's type, and reports a bad manifest in one line.

Fields a writer sets are written exactly, ``None`` included; fields never set
are left out, so a manifest read and written again is unchanged. Keys this
reader does not name (builder details of an artifact, for example) are kept
as they are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAME = "manifest.json"
# The backends an artifact may name: serving.backends' registry has one entry for each (a test holds them equal).
BACKENDS = ("tensorrt", "onnxruntime", "torchscript")
SCHEMA_VERSION = 1
BUNDLE_KIND = "inspyrenet-bundle"
SERVE_ROLE = "serve"
TENSORRT_SOURCE_ROLE = "tensorrt-source"


class ManifestError(ValueError):
    """A manifest of another kind or version, or with a field of the wrong type; one line."""


class Record(BaseModel):
    """A part of the manifest: ``to_json`` writes what was set, ``from_json`` checks types."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def from_json(cls, data: Any) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error, in one line: where it is and what is wrong."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the manifest"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg'].lower()}{more}"


class FileEntry(Record):
    """One file of the bundle: its path inside the bundle, sha256 and size."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class InputSpec(Record):
    """What the model takes: shape ``[N, 3, H, W]`` float32, normalised as ``mean``/``std`` say."""

    name: str
    shape: list[int | str] = Field(min_length=4, max_length=4)
    dtype: str
    layout: str | None = None
    color: str | None = None
    scale: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        _, _, height, width = self.shape
        return int(height), int(width)


class OutputSpec(Record):
    """What the model returns: shape ``[N, 1, H, W]`` float32 alpha in 0..1."""

    name: str
    shape: list[int | str] = Field(min_length=4, max_length=4)
    dtype: str
    range: list[float] | None = None
    meaning: str | None = None
    normalisation: str | None = None
    upsample: str | None = None


class CheckpointRecord(Record):
    """The checkpoint the bundle was built from (``pipeline.checkpoint``)."""

    source: str
    sha256: str
    kind: str | None = None
    file: str | None = None
    bytes: int | None = None
    production_ready: bool = False
    warning: str | None = None


class ExportCheck(Record):
    """The build's first check of an artifact: one photo through the serving backend against eager."""

    image: str
    max_abs_diff: float
    tolerance: float


class ParityResult(Record):
    """An artifact's parity against the PyTorch reference (``inspyrenet validate``)."""

    status: str  # passed | failed | skipped
    summary: str | None = None
    limits_class: str | None = None
    checked_at: str | None = None
    device: str | None = None
    references: str | None = None
    report: str | None = None
    # Set when a later validation could not check the artifact (e.g. torch is not installed there): the
    # verdict above is the earlier one, kept; this says when and why it was not checked again.
    not_rechecked: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


class Artifact(FileEntry):
    """One runnable model file (plus any side files, e.g. ONNX external data) and how it was made."""

    backend: str
    precision: str
    device: str
    extra_files: list[FileEntry] = Field(default_factory=list)
    max_batch: int = Field(default=1, ge=1)
    role: str | None = None  # None: 'serve'; 'tensorrt-source': the fp16 graph the engine is compiled from
    label: str | None = None  # unique within the bundle when two artifacts share a backend
    exporter: str | None = None
    opset: int | None = None
    export_check: ExportCheck | None = None
    parity: ParityResult | None = None
    target: dict[str, Any] | None = None  # a TensorRT engine's GPU and runtime (serving.backends.tensorrt_target)
    io: dict[str, Any] | None = None  # a TensorRT engine's input/output tensors as built
    quantization: dict[str, Any] | None = None  # an int8 artifact's method and settings (pipeline/export/onnx_int8.py)
    # Optional: its parity failure leaves it unserved but does not fail the bundle, and it is served only
    # after it passed (the int8 artifact: worth having only when it is as good as the gate asks).
    optional: bool = False

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}: this server knows {', '.join(BACKENDS)}")
        return value

    # Records are compared and hashed by identity: two artifacts are never "the same" by value.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def main(self) -> FileEntry:
        return FileEntry(file=self.file, sha256=self.sha256, bytes=self.bytes)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return (self.main, *self.extra_files)

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @property
    def servable(self) -> bool:
        return (self.role or SERVE_ROLE) == SERVE_ROLE

    @property
    def name(self) -> str:
        """A name unique within the bundle: the backend, or e.g. 'onnxruntime-fp16' for a second ONNX file."""
        return self.label or self.backend


class SkippedArtifact(Record):
    backend: str
    reason: str


class Validation(Record):
    """The bundle's parity verdict as a whole."""

    status: str  # pending | passed | failed | skipped
    reason: str | None = None
    checked_at: str | None = None
    references: str | None = None
    report: str | None = None
    fp16_islands: dict[str, Any] | None = None


class ReferenceImage(Record):
    name: str
    file: str
    note: str = ""


class ParityReferences(Record):
    """Parity references stored in the bundle (``pipeline.parity.references``), so torch-free machines can check."""

    checkpoint_sha256: str
    images: list[ReferenceImage]
    masks: str
    files: list[FileEntry]
    model_encoding: str | None = None
    end_to_end_encoding: str | None = None


class Manifest(Record):
    """``manifest.json``: written last by the build, so one that exists describes a finished bundle."""

    kind: str
    schema_version: int
    mode: str
    created_at: str
    checkpoint: CheckpointRecord
    input: InputSpec
    output: OutputSpec
    artifacts: list[Artifact]
    production_ready: bool = False
    skipped_artifacts: list[SkippedArtifact] = Field(default_factory=list)
    validation: Validation | None = None
    build: dict[str, Any] | None = None
    parity_references: ParityReferences | None = None

    @classmethod
    def new(cls, **fields: Any) -> Manifest:
        """A manifest of this kind and schema version (the build's starting point)."""
        return cls(kind=BUNDLE_KIND, schema_version=SCHEMA_VERSION, **fields)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Check the kind and the schema version before anything else, then every field."""
        if not isinstance(data, dict) or data.get("kind") != BUNDLE_KIND:
            raise ManifestError("not an InSPyReNet bundle manifest")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"schema version {version!r}, this reader understands {SCHEMA_VERSION}")
        manifest: Manifest = super().from_json(data)
        return manifest

    def artifact(self, backend: str) -> Artifact | None:
        """The servable artifact of ``backend``, if the bundle has one."""
        return next((a for a in self.artifacts if a.backend == backend and a.servable), None)

    def by_role(self, role: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.role == role), None)

    @property
    def version_key(self) -> str:
        """``MODE-<checkpoint sha256[:12]>-<build time, UTC>``: the version a bundle is published under."""
        import datetime as dt

        created = dt.datetime.fromisoformat(self.created_at).astimezone(dt.UTC)
        return f"{self.mode}-{self.checkpoint.sha256[:12]}-{created:%Y%m%dT%H%M%SZ}"
