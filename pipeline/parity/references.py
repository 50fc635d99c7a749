"""Parity references stored in the bundle, so a machine without torch can validate an artifact.

The CPU build computes both references of every parity image (the eager fp32
model's mask at model resolution, transparent-background's 8-bit map at image
resolution) and keeps them with the bundle:

    parity/references/images/NN-NAME      the encoded image, exactly as decoded
    parity/references/masks.npz           model masks as uint16 (x/65535: error < 8e-6,
                                          far under the fp32 limits), end-to-end maps as uint8

The manifest's ``parity_references`` lists every file with its sha256 and the
checkpoint they come from. ``inspyrenet build-engine`` on the GPU (no torch, no
transparent-background) and ``inspyrenet validate`` read them back; a file that
does not match its sha256, or references from another checkpoint, are refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipeline.bundle_writer import file_entry
from pipeline.errors import BuildError
from pipeline.parity.images import Case, ParityImage
from serving.atomic_files import write_bytes_atomic
from serving.bundle import Bundle, sha256_file
from serving.imaging.contract import ImageError, decode_image, preprocess
from serving.manifest import FileEntry, ParityReferences, ReferenceImage

DIRECTORY = Path("parity") / "references"
MASKS = "masks.npz"
MODEL_SCALE = 65535.0


def save(bundle_dir: Path, cases, checkpoint_sha256: str) -> ParityReferences:
    """Write the references of ``cases`` into the bundle; return the manifest's ``parity_references``."""
    root = Path(bundle_dir) / DIRECTORY
    (root / "images").mkdir(parents=True, exist_ok=True)
    files, images, arrays = [], [], {}
    for index, case in enumerate(cases):
        relative = DIRECTORY / "images" / f"{index:02d}-{_safe(case.image.name)}"
        write_bytes_atomic(Path(bundle_dir) / relative, case.image.data)
        files.append(file_entry(Path(bundle_dir) / relative, relative.as_posix()))
        images.append(ReferenceImage(name=case.image.name, note=case.image.note, file=relative.as_posix()))
        model = np.clip(np.nan_to_num(case.model_reference, nan=0.0), 0.0, 1.0)
        arrays[f"model_{index}"] = np.round(model * MODEL_SCALE).astype(np.uint16)
        arrays[f"end_to_end_{index}"] = np.asarray(case.end_to_end_reference, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(root / MASKS, buffer.getvalue())
    masks = (DIRECTORY / MASKS).as_posix()
    files.append(file_entry(root / MASKS, masks))
    return ParityReferences(
        checkpoint_sha256=checkpoint_sha256,
        images=images,
        masks=masks,
        model_encoding="uint16, value / 65535",
        end_to_end_encoding="uint8",
        files=files,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:80] or "image"


def verify_hashes(bundle: Bundle) -> int:
    """Check every stored reference file against its sha256; how many there are (0: none stored)."""
    record = bundle.manifest.parity_references
    if record is None:
        return 0
    for entry in record.files:
        _verify(bundle.root, entry)
    return len(record.files)


def load(bundle: Bundle):
    """The stored cases of ``bundle`` (pipeline.parity.images.Case), or None when it has none.

    Raises BuildError when they exist but cannot be trusted.
    """

    record = bundle.manifest.parity_references
    if record is None:
        return None
    if record.checkpoint_sha256 != bundle.manifest.checkpoint.sha256:
        raise BuildError(
            "the bundle's stored parity references come from another checkpoint; "
            "run `inspyrenet validate` on a machine with the build dependencies to redo them"
        )
    verify_hashes(bundle)
    try:
        with np.load(bundle.root / record.masks) as masks:
            arrays = {key: masks[key] for key in masks.files}
        cases = []
        for index, image in enumerate(record.images):
            data = (bundle.root / image.file).read_bytes()
            decoded = decode_image(data)
            model = arrays[f"model_{index}"].astype(np.float32) / MODEL_SCALE
            end_to_end = arrays[f"end_to_end_{index}"]
            size = (decoded.size[1], decoded.size[0])
            if model.shape != bundle.input_size or end_to_end.shape != size:
                raise BuildError(f"stored references of {image.name!r} have the wrong shape")
            cases.append(
                Case(
                    ParityImage(image.name, data, image.note),
                    size,
                    preprocess(decoded, bundle.input_size),
                    model,
                    end_to_end,
                    decoded,
                )
            )
    except (KeyError, TypeError, ValueError, OSError, ImageError) as exc:
        raise BuildError(f"the bundle's stored parity references are unreadable: {exc}") from None
    return cases


def _verify(root: Path, entry: FileEntry) -> None:
    relative = Path(entry.file)
    if relative.is_absolute() or ".." in relative.parts or relative.parts[:2] != DIRECTORY.parts:
        raise BuildError(f"stored parity reference path {entry.file!r} leaves {DIRECTORY}")
    path = root / relative
    if path.is_symlink() or not path.is_file():
        raise BuildError(f"stored parity reference {relative} is missing")
    if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
        raise BuildError(f"stored parity reference {relative} does not match its sha256 in the manifest")
