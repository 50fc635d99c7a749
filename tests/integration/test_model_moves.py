"""Every tensor of an export model follows a move (issue 37: the GPU check failed on every CUDA device).

InSPyReNet's image-pyramid and transition kernels are plain tensor attributes that ``nn.Module.to`` on a
parent never moved: on CUDA the first convolution met a CPU kernel. A ``meta`` or float64 move shows the
same on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.harness import FAST_SIZE

pytestmark = pytest.mark.slow


def every_tensor(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters, buffers, and tensors held by plain (non-module) objects a module keeps as attributes."""
    found = dict([*model.named_parameters(), *model.named_buffers()])
    for module_name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and attribute[0] != "_":
                found[f"{module_name}.{attribute}"] = value
            elif not isinstance(value, (nn.Module, torch.Tensor)) and hasattr(value, "__dict__"):
                for inner, tensor in vars(value).items():
                    if isinstance(tensor, torch.Tensor):
                        found[f"{module_name}.{attribute}.{inner}"] = tensor
    return found


@pytest.fixture(scope="module")
def state(synthetic_checkpoint):
    from pipeline.checkpoint import load_state_dict
    from pipeline.export.model import expected_keys

    return load_state_dict(synthetic_checkpoint, expected_keys())


@pytest.mark.parametrize("factory", ["export_model", "mixed_precision_model"])
def test_every_tensor_of_the_export_models_follows_a_device_move(state, factory):
    from pipeline.export import mixed_precision, model

    built = getattr(model if factory == "export_model" else mixed_precision, factory)(state, FAST_SIZE)
    kernels = {name for name in every_tensor(built) if name.endswith(".kernel")}
    assert {"network.image_pyramid.kernel", "network.transition0.kernel"} <= kernels  # the walk sees them
    built.to("meta")
    left = {name: str(tensor.device) for name, tensor in every_tensor(built).items() if tensor.device.type != "meta"}
    assert not left


def test_the_export_model_runs_after_a_dtype_move(state, photo_batch):
    """What ``.to("cuda")`` needs, on a CPU: before the fix, "expected scalar type Double but found Float"."""
    from pipeline.export.model import export_model

    built = export_model(state, FAST_SIZE)
    image = torch.from_numpy(photo_batch["chelsea"])
    with torch.inference_mode():
        single = built(image).numpy()
        built.to(torch.float64)
        double = built(image.to(torch.float64))
    assert double.dtype == torch.float64
    assert abs(double.numpy() - single).max() < 1e-3
