"""The fp16-with-fp32-islands export graph (what TensorRT builds), checked on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.harness import FAST_SIZE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def state(synthetic_checkpoint):
    from pipeline.checkpoint import load_state_dict
    from pipeline.export.model import expected_keys

    return load_state_dict(synthetic_checkpoint, expected_keys())


@pytest.fixture(scope="module")
def mixed(state):
    from pipeline.export.mixed_precision import mixed_precision_model

    return mixed_precision_model(state, FAST_SIZE)


@pytest.fixture(scope="module")
def program(mixed):
    from pipeline.export.mixed_precision import export_program

    return export_program(mixed, torch.zeros(1, 3, *FAST_SIZE), max_batch=4)


def test_island_weights_stay_fp32_and_the_rest_is_fp16(mixed, state):
    from pipeline.export.mixed_precision import fp32_tensors

    kept = set(fp32_tensors(mixed))
    layer_norms = {
        f"network.{k}"
        for k in state
        if ".norm" in k and k.endswith((".weight", ".bias")) and state[k].dim() == 1 and "backbone" in k
    }
    assert layer_norms
    assert layer_norms <= kept
    assert any(k.endswith("relative_position_bias_table") for k in kept)
    assert {"network.attention0.threshold", "network.attention0.lthreshold"} <= kept
    assert "network.attention0.conv_key.0.bn.running_var" in kept
    params = dict(mixed.named_parameters())
    assert params["network.backbone.patch_embed.proj.weight"].dtype == torch.float16
    assert params["network.attention0.conv_query.0.conv.weight"].dtype == torch.float16
    # Island weights are the checkpoint's fp32 values, not fp16 round trips.
    assert torch.equal(
        dict(mixed.named_buffers())["network.attention0.conv_key.0.bn.running_var"],
        state["attention0.conv_key.0.bn.running_var"],
    )


def test_export_graph_has_fp32_islands_and_explicit_casts(program):
    from pipeline.export.mixed_precision import dtypes_by_op, implicit_promotions

    dtypes = dtypes_by_op(program)
    for op in ("softmax", "bmm", "layer_norm", "sigmoid", "amin", "amax"):
        assert dtypes[op] == {"float32"}, (op, dtypes[op])
    for op in ("linear", "gelu"):
        assert dtypes[op] == {"float16"}, (op, dtypes[op])
    assert "float16" in dtypes["conv2d"]
    assert implicit_promotions(program) == []
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == "image"]
    assert inputs
    assert inputs[0].meta["val"].dtype == torch.float32


def test_exported_graph_runs_any_batch_like_the_model(program, mixed, photo_batch):
    from pipeline.export.fp16_emulation import Fp16Emulation

    images = np.concatenate([photo_batch["chelsea"], photo_batch["astronaut"], photo_batch["coffee"]])
    with torch.no_grad(), Fp16Emulation():  # fp16 storage at fp32 speed, on any CPU
        exported = program.module()(torch.from_numpy(images))
        single = mixed(torch.from_numpy(images[1:2]))
    assert exported.dtype == torch.float32
    assert exported.shape == (3, 1, *FAST_SIZE)
    assert float((exported[1:2] - single).abs().max()) < 1e-2


def test_mixed_precision_parity_against_fp32(mixed, eager_model, photo_batch):
    """The overflow check that needs no GPU: half precision stays finite and close to fp32."""
    from pipeline.export.fp16_emulation import Fp16Emulation
    from pipeline.parity.check import DEFAULT_LIMITS, failures, mask_metrics

    for name in ("chelsea", "astronaut"):
        x = torch.from_numpy(photo_batch[name])
        with torch.no_grad():
            reference = eager_model(x).numpy()[0, 0]
            with Fp16Emulation():
                half = mixed(x).numpy()[0, 0]
        metrics = mask_metrics(half, reference)
        assert metrics["nonfinite"] == 0
        assert metrics["max_abs"] > 0, "an fp16 graph that matches fp32 exactly did not run in fp16"
        assert failures(metrics, DEFAULT_LIMITS["fp16"]["model"]) == [], (name, metrics)


def planted_overflow(state: dict[str, torch.Tensor], scale: float = 2.0**15) -> dict[str, torch.Tensor]:
    """The same function in fp32, an overflow in fp16: one decoder activation scaled up by ``scale``
    (its BatchNorm's weight and bias) and the next convolution's weights scaled down by as much.
    At 2**15, 95 of that activation's values pass 65504 on the chelsea photo (2**14: none)."""
    planted = dict(state)
    for name in ("context5.branch1.conv1.bn.weight", "context5.branch1.conv1.bn.bias"):
        planted[name] = state[name] * scale
    planted["context5.branch1.conv2.conv.weight"] = state["context5.branch1.conv2.conv.weight"] / scale
    return planted


def test_fp16_check_reports_a_planted_overflow(state, eager_model, photo_batch):
    """The validation's fp16 row, emulated, catches an activation past fp16's range that fp32 does not see."""
    from pipeline.export.model import export_model
    from pipeline.parity import images as parity_images
    from pipeline.parity.check import DEFAULT_LIMITS, run_fp16_islands
    from pipeline.parity.images import Case
    from serving.imaging.contract import mask_to_uint8

    planted = planted_overflow(state)
    planted_eager = export_model(planted, FAST_SIZE)
    image = next(i for i in parity_images.default_set() if i.name == "chelsea")
    x = photo_batch["chelsea"]
    with torch.no_grad():
        reference = planted_eager(torch.from_numpy(x)).numpy()[0, 0]
        assert float(np.abs(reference - eager_model(torch.from_numpy(x)).numpy()[0, 0]).max()) < 1e-3
    case = Case(image, FAST_SIZE, x, reference, mask_to_uint8(reference), None)

    def check(weights):
        return run_fp16_islands(weights, FAST_SIZE, [case], DEFAULT_LIMITS, execution="emulated")

    result = check(planted)
    assert result["execution"]["mode"] == "emulated"
    assert result["status"] == "failed", result["summary"]
    assert result["worst"]["model"]["nonfinite"] > 0, result["summary"]
    clean = check(state)
    assert clean["status"] == "passed", clean["summary"]
    assert clean["worst"]["model"]["nonfinite"] == 0, clean["summary"]
