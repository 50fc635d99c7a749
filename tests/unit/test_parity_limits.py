"""Parity limits and metrics: overrides are checked, metrics are right on known masks."""

from __future__ import annotations

import numpy as np
import pytest


def test_threshold_overrides_are_checked():
    from pipeline.errors import BuildError
    from pipeline.parity.check import limits_with_overrides

    limits = limits_with_overrides(["fp16.model.max_abs=0.25", "fp32.end_to_end.max_nonfinite=3"])
    assert limits["fp16"]["model"].max_abs == 0.25
    assert limits["fp32"]["end_to_end"].max_nonfinite == 3
    for bad in ("fp64.model.max_abs=1", "fp32.model.max_abs", "fp32.model.speed=1", "fp32.model.max_abs=x"):
        with pytest.raises(BuildError):
            limits_with_overrides([bad])


def test_metrics_on_known_masks():
    from pipeline.parity.check import mask_metrics

    reference = np.zeros((10, 10))
    reference[:5] = 1.0
    same = mask_metrics(reference.copy(), reference)
    assert same == {"mean_abs": 0.0, "max_abs": 0.0, "p999_abs": 0.0, "iou": 1.0, "off_share": 0.0, "nonfinite": 0}
    shifted = reference.copy()
    shifted[5] = 1.0  # one more row of foreground
    metrics = mask_metrics(shifted, reference)
    assert metrics["iou"] == pytest.approx(50 / 60)
    assert metrics["off_share"] == pytest.approx(0.1)
    broken = reference.copy()
    broken[0, 0] = np.nan
    assert mask_metrics(broken, reference)["nonfinite"] == 1
    assert mask_metrics(broken, reference)["max_abs"] == 1.0
