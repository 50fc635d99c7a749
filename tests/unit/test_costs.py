"""The cost table: prices from deploy/prices.json (parameters with their source), billing arithmetic."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.costs import Prices, PricesError, Traffic, cost_rows, instance_usd_per_second
from tests.harness import REPO

PRICES = Prices(vcpu_second=0.00002, gib_second=0.000002, l4_gpu_second=0.0002, source="test")


def test_the_repositorys_price_list_loads_with_its_source():
    prices = Prices.load(REPO / "deploy" / "prices.json")
    assert "cloud.google.com/run/pricing" in prices.source
    assert "2026" in prices.source
    assert 0 < prices.vcpu_second < prices.l4_gpu_second


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "cannot read the prices"),
        ('{"currency": "EUR", "source": "x"}', "USD price list"),
        (
            '{"currency": "USD", "source": "x", "vcpu_second": 0.1, "gib_second": "1", "l4_gpu_second": 0.1}',
            "gib_second",
        ),
        (
            '{"currency": "USD", "source": "x", "vcpu_second": 5, "gib_second": 0.1, "l4_gpu_second": 0.1}',
            "vcpu_second",
        ),
    ],
)
def test_a_bad_price_list_is_one_line(tmp_path, content, words):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PricesError, match=words):
        Prices.load(path)
    result = CliRunner().invoke(main, ["costs", "--prices", str(path)])
    assert result.exit_code == 1
    assert words in result.output
    assert "Traceback" not in result.output


def test_instance_based_billing_arithmetic():
    l4 = 4 * 0.00002 + 16 * 0.000002 + 0.0002  # service.yaml: 4 vCPU, 16 GiB, one L4
    cpu = 4 * 0.00002 + 8 * 0.000002  # service-cpu.yaml: 4 vCPU, 8 GiB
    assert instance_usd_per_second(PRICES, 4, 16, 1) == pytest.approx(l4)
    traffic = Traffic(images_per_day=2000, business_hours=12, cold_starts_per_day=4, idle_tail_s=900)
    rows = cost_rows(PRICES, traffic, cpu_seconds_per_image=3.0, l4_seconds_per_image=0.5)
    always, business, zero, backup = rows
    assert always["usd_per_day"] == pytest.approx(l4 * 86_400)
    assert always["usd_per_1000_images"] == pytest.approx(l4 * 86_400 / 2)
    tails = 4 * 900
    assert business["usd_per_day"] == pytest.approx(l4 * (12 * 3600 + 2000 * 0.5 * 0.5 + tails))
    assert zero["usd_per_day"] == pytest.approx(l4 * (2000 * 0.5 + tails))
    assert backup["usd_per_day"] == pytest.approx(cpu * (2000 * 3.0 + tails))


def test_unknown_seconds_per_image_are_said_not_guessed(tmp_path):
    traffic = Traffic(images_per_day=1000, business_hours=11, cold_starts_per_day=5, idle_tail_s=900)
    always, business, zero, backup = cost_rows(PRICES, traffic, None, None)
    assert always["usd_per_day"] is not None
    assert business["usd_per_day"] is None
    assert "gpu-check" in business["needs"]
    assert "warm hours alone" in business["needs"]
    assert zero["usd_per_day"] is None
    assert backup["usd_per_day"] is None
    assert "bench-cpu-service" in backup["needs"]
    report = tmp_path / "cpu-service.json"
    report.write_text(
        json.dumps({"results": [{"mode": "fast", "latency_s": {"12mp": {"p50": 2.0}, "1mp": {"p50": 1.0}}}]})
    )
    shown = CliRunner().invoke(main, ["costs", "--cpu-report", str(report), "--images-per-day", "1000"])
    assert shown.exit_code == 0, shown.output
    backup_line = next(line for line in shown.output.splitlines() if line.startswith("| CPU backup"))
    assert "needs" not in backup_line
    assert "$" in backup_line
    missing = CliRunner().invoke(main, ["costs", "--cpu-report", str(report), "--mode", "base"])
    assert missing.exit_code == 1
    assert "cannot read base 12mp seconds" in missing.output
