"""What the repository's own files say, read as their consumers read them: the deploy templates rendered
with example values, the constraint files' pins, a Dockerfile's instructions, an install's dependency tree.
Shared by the unit tier (the files' contents) and the system tier (the tools that consume them)."""

from __future__ import annotations

import string
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import REPO

SERVICE_VALUES = {
    "SERVICE": "cutouts",
    "IMAGE": "europe-docker.pkg.dev/acme-prod/r/serve:1",
    "MIN_INSTANCES": "0",
    "SERVICE_ACCOUNT": "cutouts-serve@acme-prod.iam.gserviceaccount.com",
}

SERVICE_CPU_VALUES = {
    "SERVICE": "cutouts-cpu",
    "IMAGE": "europe-docker.pkg.dev/acme-prod/r/serve-cpu:1",
    "MIN_INSTANCES": "0",
    "SERVICE_ACCOUNT": "cutouts-cpu@acme-prod.iam.gserviceaccount.com",
}


JOB_VALUES = {
    "JOB": "engines",
    "BUILD_IMAGE": "europe-docker.pkg.dev/acme-prod/r/build:1",
    "PUBLISH_URI": "gs://acme-bundles/bundles",
    "SOURCE_URI": "gs://acme-bundles/bundles/cpu",
    "SERVICE_ACCOUNT": "engine-builder@acme-prod.iam.gserviceaccount.com",
}


GPU_CHECK_VALUES = {
    "JOB": "gpu-check",
    "BUILD_IMAGE": "europe-docker.pkg.dev/acme-prod/r/build:1",
    "BUNDLE_URI": "gs://acme-bundles/bundles/cpu/fast/latest",
    "REPORT_URI": "gs://acme-bundles/gpu-checks",
    "SERVICE_ACCOUNT": "engine-builder@acme-prod.iam.gserviceaccount.com",
}

BATCH_VALUES = {
    "JOB": "cutouts-batch",
    "IMAGE": "europe-docker.pkg.dev/acme-prod/r/serve:1",
    "SOURCE_URI": "gs://acme-uploads/2026-11",
    "DESTINATION_URI": "gs://acme-cutouts/2026-11",
    "OUTPUT": "rgba",
    "FORMAT": "webp",
    "TASKS": "12",
    "PARALLELISM": "4",
    "SERVICE_ACCOUNT": "cutouts-batch@acme-prod.iam.gserviceaccount.com",
}


SCHEDULE_ARGS = [
    "--project",
    "acme-prod",
    "--region",
    "europe-west4",
    "--service",
    "cutouts",
    "--service-account",
    "cutouts-scheduler@acme-prod.iam.gserviceaccount.com",
    "--start-hour",
    "7",
    "--end-hour",
    "20",
    "--time-zone",
    "Europe/Berlin",
]


def render(name: str, values: dict) -> str:
    return string.Template((REPO / "deploy" / "cloudrun" / name).read_text()).substitute(values)


def constraints(*names: str) -> dict[str, str]:
    pins = {}
    for name in names or ("cuda12.txt",):
        for line in (REPO / "constraints" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                requirement = Requirement(line)
                (spec,) = requirement.specifier
                pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (REPO / name).read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest))
            current = ""
    return lines


def dependency_tree(requirements: list[str]) -> set[str]:
    """Installed distributions reachable from ``requirements`` (no extras), by canonical name."""
    seen: set[str] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        requirement = stack.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            stack.extend(Requirement(r) for r in (metadata.requires(name) or []))
        except metadata.PackageNotFoundError:
            continue
    return seen
