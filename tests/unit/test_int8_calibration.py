"""Static int8 calibration's memory: the build calibrates on what fits, or skips the optional artifact with why."""

from __future__ import annotations

import pytest

from pipeline.export import onnx_int8


@pytest.mark.parametrize(
    ("size", "images", "gb"),
    [((384, 384), 1, 4.5), ((384, 384), 5, 6.5), ((1024, 1024), 1, 18.3)],  # measured: docs/performance.md
)
def test_the_memory_model_reproduces_the_measurements(size, images, gb):
    assert onnx_int8.calibration_gb(size, images) == pytest.approx(gb, abs=0.1)


def test_calibration_takes_the_photos_that_fit():
    assert onnx_int8.images_that_fit((384, 384), 5, 8.0) == 5
    assert onnx_int8.images_that_fit((1024, 1024), 5, 30.0) == 4  # a 32 GiB build job, less the build itself
    assert onnx_int8.images_that_fit((1024, 1024), 5, 20.0) == 1
    assert onnx_int8.images_that_fit((1024, 1024), 5, 16.0) == 0
    assert onnx_int8.images_that_fit((1024, 1024), 5, None) == 5  # unknown: try


def test_a_skip_names_what_calibration_needs_and_what_is_there():
    problem = onnx_int8.memory_problem((1024, 1024), 16.0)
    assert "1024x1024 needs about 18 GB" in problem
    assert "16.0 GB is available" in problem
    assert "--int8 dynamic" in problem


def test_this_machine_reports_its_available_memory():
    assert 0 < onnx_int8.available_gb() < 10_000
