"""What the build ran on, for the manifest."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "transparent-background", "numpy", "pillow")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gpu_info() -> dict[str, Any] | None:
    """The CUDA GPU torch sees; None without one, or where torch is not installed (the GPU engine step)."""
    try:
        import torch
    except ImportError:
        return None

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "name": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
    }


def build_environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "gpu": gpu_info(),
    }
