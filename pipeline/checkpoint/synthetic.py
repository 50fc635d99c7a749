"""A realistic offline checkpoint: seeded random weights, BatchNorm re-estimated on photos.

Randomly initialised InSPyReNet weights give logits around 1e11: the sigmoid
saturates and every backend "agrees" on a 0/1 mask, which makes parity
meaningless (and fp16 overflow). Re-estimating every BatchNorm's statistics
on natural photos, all in one batch so that the statistics include the
variation between images, brings the logits to about -10..10 and gives masks
with real gradients. The same seed gives a bit-identical checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import samples
from pipeline.export.model import build_network
from serving.atomic_files import atomic_path
from serving.imaging.contract import preprocess

CALIBRATION_SIZE = (384, 384)
DEFAULT_SEED = 0


def calibration_batch(size: tuple[int, int] = CALIBRATION_SIZE) -> torch.Tensor:
    images = [preprocess(img, size) for img in samples.photos().values()]
    return torch.from_numpy(np.concatenate(images))


def recalibrate_batchnorm(network: Any, batch: torch.Tensor) -> None:
    """Replace every BatchNorm's running statistics by those of ``batch`` (one pass, no grad)."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # Only the BatchNorms train: Swin's stochastic depth and dropout must stay
    # off, or the statistics (and the checkpoint) change from run to run.
    network.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: exactly this batch's statistics
        norm.train()
    with torch.no_grad():
        network.forward_inspyre(batch)
    for norm in norms:
        norm.momentum = 0.1  # the value nn.BatchNorm2d is built with
    network.eval()


def synthetic_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights with BatchNorm statistics from the calibration photos."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(CALIBRATION_SIZE)
    recalibrate_batchnorm(network, calibration_batch())
    return {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}


def synthetic_checkpoint(seed: int, cache_dir: Path) -> Path:
    """Path of the synthetic checkpoint for ``seed``, generated into ``cache_dir`` on first use."""
    path = Path(cache_dir) / f"inspyrenet-swinb-synthetic-seed{seed}.pth"
    if not path.is_file():
        state = synthetic_state_dict(seed)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            # A file object, not a path: torch.save names the archive's root
            # folder after a path's file name, and the temporary name is random.
            torch.save(state, handle)
    return path
