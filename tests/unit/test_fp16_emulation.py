"""fp16 emulation (fp32 arithmetic, fp16 storage): what the fp16 check runs on CPUs without fast fp16."""

from __future__ import annotations

import pytest
import torch

from pipeline.export.fp16_emulation import Fp16Emulation, fp16_context, fp16_execution

HALF = torch.float16


class Overflow(torch.nn.Module):
    """Scales an activation past fp16's largest value (65504) and back: a no-op in fp32, inf in fp16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 40000.0) / 40000.0


def small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(16, 8, 3, padding=1),
        torch.nn.GELU(),
    ).eval()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    return net.half()


def test_emulation_matches_native_fp16_to_a_rounding_step():
    net = small_network()
    x = torch.randn(2, 8, 24, 24).half()
    with torch.no_grad():
        native = net(x)
        with Fp16Emulation():
            emulated = net(x)
    assert emulated.dtype == HALF
    assert emulated.shape == native.shape
    # Same fp16 storage; only the order of the fp32 sums differs, which moves a few
    # values by an fp16 rounding step (measured: 99.9% bit-identical, at most 3 steps
    # on values near zero, i.e. under one step at the output's scale).
    scale = float(native.float().abs().max())
    assert float((emulated.float() - native.float()).abs().max()) <= torch.finfo(HALF).eps * scale
    assert float((emulated == native).float().mean()) > 0.99


def test_emulation_overflows_where_fp16_overflows_and_fp32_does_not():
    x = torch.full((4,), 2.0)
    assert torch.equal(Overflow()(x), x)  # fp32: no effect
    with torch.no_grad(), Fp16Emulation():
        emulated = Overflow()(x.half())
    assert emulated.dtype == HALF
    assert bool(torch.isinf(emulated).all())


def test_emulation_keeps_explicit_fp32_islands_and_in_place_ops():
    with torch.no_grad(), Fp16Emulation():
        island = torch.full((3,), 300.0, dtype=HALF).float() * 1000.0  # fp32 island: 3e5 is fine
        assert island.dtype == torch.float32
        assert bool(torch.isfinite(island).all())
        value = torch.full((3,), 2.0, dtype=HALF)
        value.mul_(40000.0)  # in place, fp16 storage: overflows
        assert value.dtype == HALF
        assert bool(torch.isinf(value).all())
        total = torch.ones(4, dtype=HALF) @ torch.ones(4, dtype=HALF)
        assert total.dtype == HALF
        assert float(total) == 4.0


def test_execution_choice_is_reported():
    emulated = fp16_execution("cpu", "emulated")
    assert emulated.mode == "emulated"
    assert emulated.reason == "asked for"
    assert emulated.cpu
    assert emulated.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert isinstance(fp16_context(emulated), Fp16Emulation)
    assert fp16_execution("cpu", "native").mode == "native"
    assert fp16_execution("cuda").mode == "native"
    threads = torch.get_num_threads()
    probed = fp16_execution("cpu")  # the probe times both dtypes on one thread, then gives the threads back
    assert probed.mode in ("native", "emulated")
    assert probed.reason.startswith("probe: ")
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="fp16 execution 'fast': expected one of"):
        fp16_execution("cpu", "fast")


def test_cli_choices_match_the_module():
    from pipeline import cli
    from pipeline.export.fp16_emulation import FP16_EXECUTION_CHOICES

    assert cli.FP16_EXECUTION_CHOICES == FP16_EXECUTION_CHOICES
