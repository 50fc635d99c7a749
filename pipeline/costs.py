"""What the deployment costs a day and per 1,000 images, from published per-second prices.

Prices are parameters (deploy/prices.json, the page and the date they were read), never constants
here. Cloud Run's instance-based billing (CPU always allocated, what both services use) bills an
instance for every second it exists, busy or idle, so:

- a warm instance (min instances 1) costs its price x the hours it is kept, whatever the traffic;
- scale to zero costs the seconds requests keep it busy plus, per cold start, the idle tail before
  Cloud Run removes it (no documented figure: the ``idle_tail_s`` parameter, 15 minutes by default);
- the CPU backup (concurrency 1) costs an image's seconds of its instance, measured by
  ``inspyrenet bench-cpu-service``; the L4's seconds per image come from ``inspyrenet gpu-check``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

L4_INSTANCE: dict[str, Any] = {"vcpus": 4, "memory_gib": 16.0, "gpus": 1}  # deploy/cloudrun/service.yaml
CPU_INSTANCE: dict[str, Any] = {"vcpus": 4, "memory_gib": 8.0, "gpus": 0}  # deploy/cloudrun/service-cpu.yaml


class PricesError(UserError):
    """A prices file the cost table cannot use."""


@dataclass(frozen=True)
class Prices:
    vcpu_second: float
    gib_second: float
    l4_gpu_second: float
    source: str

    @classmethod
    def load(cls, path: Path) -> Prices:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PricesError(f"cannot read the prices {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("currency") != "USD" or not isinstance(data.get("source"), str):
            raise PricesError(f"{path}: needs a USD price list with its source (the page and the date read)")
        values = {}
        for name in ("vcpu_second", "gib_second", "l4_gpu_second"):
            value = data.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1 or math.isnan(value):
                raise PricesError(f"{path}: {name} must be a price per second in dollars (0 to 1), got {value!r}")
            values[name] = float(value)
        return cls(**values, source=data["source"])


def instance_usd_per_second(prices: Prices, vcpus: float, memory_gib: float, gpus: int) -> float:
    return vcpus * prices.vcpu_second + memory_gib * prices.gib_second + gpus * prices.l4_gpu_second


@dataclass(frozen=True)
class Traffic:
    images_per_day: int
    business_hours: float  # hours a day the scheduler keeps one L4 instance warm
    cold_starts_per_day: float  # scale to zero: instances started a day (the plan's target: under 5)
    idle_tail_s: float  # seconds an instance stays, idle and billed, after its last request


def cost_rows(
    prices: Prices, traffic: Traffic, cpu_seconds_per_image: float | None, l4_seconds_per_image: float | None
) -> list[dict]:
    """One row per deployment: dollars an hour of instance, billed hours a day, dollars a day and per 1,000 images.

    A figure that needs an unmeasured input (the L4's seconds per image before a GPU check) is None.
    """
    l4 = instance_usd_per_second(prices, **L4_INSTANCE)
    cpu = instance_usd_per_second(prices, **CPU_INSTANCE)
    per_thousand = traffic.images_per_day / 1000

    def row(name: str, per_second: float, billed_s: float | None, needs: str = "") -> dict:
        per_day = None if billed_s is None else per_second * billed_s
        return {
            "deployment": name,
            "usd_per_hour": per_second * 3600,
            "billed_hours_per_day": None if billed_s is None else billed_s / 3600,
            "usd_per_day": per_day,
            "usd_per_1000_images": None if per_day is None or not per_thousand else per_day / per_thousand,
            "needs": needs if billed_s is None else "",
        }

    def busy(seconds_per_image: float | None) -> float | None:
        return None if seconds_per_image is None else traffic.images_per_day * seconds_per_image

    tails = traffic.cold_starts_per_day * traffic.idle_tail_s
    l4_busy, cpu_busy = busy(l4_seconds_per_image), busy(cpu_seconds_per_image)
    warm_s = traffic.business_hours * 3600
    # Outside business hours the L4 scales to zero: the images that come then (a share of the day's,
    # spread evenly) keep it busy, and its cold starts happen then.
    outside = None if l4_busy is None else l4_busy * (1 - traffic.business_hours / 24) + tails
    needs_l4 = "the L4's seconds per image (inspyrenet gpu-check)"
    business = row(
        f"L4, business hours ({traffic.business_hours:g} h warm, scale to zero outside)",
        l4,
        None if outside is None else warm_s + outside,
        f"{needs_l4}; the warm hours alone: ${l4 * warm_s:,.2f}",
    )
    return [
        row("L4, always on (min instances 1)", l4, 86_400.0),
        business,
        row("L4, scale to zero", l4, None if l4_busy is None else l4_busy + tails, needs_l4),
        row(
            "CPU backup, scale to zero",
            cpu,
            None if cpu_busy is None else cpu_busy + tails,
            "the CPU service's seconds per image (inspyrenet bench-cpu-service)",
        ),
    ]


def markdown(rows: list[dict], traffic: Traffic) -> str:
    def money(value: float | None, needs: str) -> str:
        return f"needs {needs}" if value is None else f"${value:,.2f}"

    lines = [
        f"{traffic.images_per_day:,} images a day; scale to zero: {traffic.cold_starts_per_day:g} cold starts a day, "
        f"each followed by {traffic.idle_tail_s / 60:g} min billed idle",
        "",
        "| deployment | $ per instance-hour | billed hours a day | $ a day | $ per 1,000 images |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        hours = "-" if r["billed_hours_per_day"] is None else f"{r['billed_hours_per_day']:.2f}"
        lines.append(
            f"| {r['deployment']} | ${r['usd_per_hour']:.3f} | {hours} | {money(r['usd_per_day'], r['needs'])} | "
            f"{money(r['usd_per_1000_images'], r['needs'])} |"
        )
    return "\n".join(lines)
