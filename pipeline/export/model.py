"""The export model: transparent-background's InSPyReNet_SwinB with per-sample normalisation.

``InSPyReNet.forward_inference`` min/max-normalises the sigmoid over the whole
batch, so a batch of 2 differs from two batches of 1. The wrapper normalises
each sample on its own; for a batch of one it computes exactly what
``Remover`` computes.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

DEPTH = 64
NORMALISATION_EPS = 1e-8  # the epsilon of forward_inference


def _window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Swin's window_reverse without ``int(tensor_size / float)``.

    The original computes the batch size as a Python float division cast to
    int, which tracing and torch.export freeze to the example's batch: the
    exported graph then mixes the samples of any other batch size. Integer
    division on sizes stays symbolic. Same values, same views: numerics are
    unchanged.
    """
    rows, cols = H // window_size, W // window_size
    batch = windows.shape[0] // (rows * cols)
    x = windows.view(batch, rows, cols, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, H, W, windows.shape[-1])


def _import_network_factory():
    with warnings.catch_warnings():
        # transparent-background warns about its optional GUI (flet) on import.
        warnings.simplefilter("ignore")
        from transparent_background.backbones import SwinTransformer
        from transparent_background.InSPyReNet import InSPyReNet_SwinB
    SwinTransformer.window_reverse = _window_reverse
    return InSPyReNet_SwinB


def build_network(size: tuple[int, int]) -> nn.Module:
    """A fresh InSPyReNet_SwinB for inputs of ``size`` (height, width), as Remover builds it."""
    factory = _import_network_factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid indexing warning inside Swin
        network = factory(depth=DEPTH, pretrained=False, base_size=list(size), threshold=None)
    return network.eval()


# InSPyReNet's objects that hold a plain tensor (``kernel``), not a module: its own ``to`` moves them,
# ``nn.Module.to`` on a parent never calls it, and they are no buffers.
PLAIN_KERNEL_HOLDERS = ("image_pyramid", "transition0", "transition1", "transition2")


class PerSampleMask(nn.Module):
    """image (N, 3, H, W) float32, normalised -> mask (N, 1, H, W) in [0, 1], per-sample min/max."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network: Any = network  # the upstream InSPyReNet module: forward_inspyre is its own

    def _apply(self, fn, recurse=True):
        """Every move (``to``, ``cuda``, ``half``, ``to_empty``) also moves the upstream plain kernels."""
        super()._apply(fn, recurse)
        for name in PLAIN_KERNEL_HOLDERS:
            holder = getattr(self.network, name)
            holder.kernel = fn(holder.kernel)
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network.forward_inspyre(image)["saliency"][-1]
        return normalise_per_sample(torch.sigmoid(logits))


def normalise_per_sample(prob: torch.Tensor) -> torch.Tensor:
    flat = prob.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1, 1)
    high = flat.amax(dim=1).view(-1, 1, 1, 1)
    return (prob - low) / (high - low + NORMALISATION_EPS)


def export_model(state_dict: dict[str, torch.Tensor], size: tuple[int, int]) -> PerSampleMask:
    """The eval-mode export model with ``state_dict`` loaded strictly."""
    network = build_network(size)
    network.load_state_dict(state_dict, strict=True)
    return PerSampleMask(network).eval()


def expected_keys(size: tuple[int, int] = (384, 384)) -> dict[str, torch.Size]:
    """Parameter and buffer names and shapes a checkpoint must provide."""
    return {name: tensor.shape for name, tensor in build_network(size).state_dict().items()}
