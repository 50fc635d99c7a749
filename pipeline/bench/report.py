"""``inspyrenet bench``'s report: baseline / ours ratios, the Markdown tables and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench import cpu_precision
from pipeline.bench.harness import SIZES
from pipeline.bench.measure import CONCURRENCY


def ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    base_fresh, base_warm = report["cold_start"]["baseline_fresh"], report["cold_start"]["baseline_warm"]
    for backend, cold in report["cold_start"]["ours"].items():
        rows.append(
            {
                "measure": f"cold start to first 12 MP response, {backend} vs fresh-cache baseline",
                "ours": cold["first_response_s"],
                "baseline": base_fresh["first_response_s"],
                "unit": "s",
            }
        )
        rows.append(
            {
                "measure": f"cold start to first 12 MP response, {backend} vs warm-cache baseline",
                "ours": cold["first_response_s"],
                "baseline": base_warm["first_response_s"],
                "unit": "s",
            }
        )
        rows.append(
            {
                "measure": f"start to /health 200, {backend} vs fresh-cache baseline",
                "ours": cold["health_s"],
                "baseline": base_fresh["health_s"],
                "unit": "s",
            }
        )
    for backend, warm_ours in report["warm"]["ours"].items():
        warm_base = report["warm"]["baseline"]
        for size in SIZES:
            rows.append(
                {
                    "measure": f"warm {size} JPEG -> RGBA PNG p50, {backend}",
                    "ours": warm_ours["latency"][size]["total"]["p50"],
                    "baseline": warm_base["latency"][size]["total"]["p50"],
                    "unit": "s",
                }
            )
        for concurrency in CONCURRENCY:
            key = str(concurrency)
            rows.append(
                {
                    "measure": f"throughput 1 MP at concurrency {concurrency}, {backend}",
                    "ours": warm_ours["throughput_rps"][key],
                    "baseline": warm_base["throughput_rps"][key],
                    "unit": "req/s",
                    "higher_is_better": True,
                }
            )
    for row in rows:
        row["ratio"] = row["ours"] / row["baseline"] if row.get("higher_is_better") else row["baseline"] / row["ours"]
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The bench report as Markdown tables: ratios, start-up phases, precisions, encoders, latency, memory."""
    m = report["machine"]
    header = (
        f"Machine: {m['cpu']} ({m.get('instruction_set', '?')}), {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"mode {report['mode']}, "
        f"checkpoint {report['checkpoint']}, medians of {report['runs']} runs."
    )
    tables = [
        _ratio_table(report),
        _startup_table(report),
        cpu_precision.comparison_rows(report),
        _encoder_table(report),
        *_latency_and_memory_tables(report),
    ]
    lines = [header]
    for table in tables:
        if table:
            lines += ["", *table]
    return "\n".join(lines)


def _ratio_table(report: dict[str, Any]) -> list[str]:
    lines = ["| measure | ours | baseline | advantage |", "| --- | --- | --- | --- |"]
    for row in report["ratios"]:
        lines.append(
            f"| {row['measure']} | {row['ours']:.2f} {row['unit']} | {row['baseline']:.2f} {row['unit']} "
            f"| {row['ratio']:.1f}x |"
        )
    return lines


def _startup_table(report: dict[str, Any]) -> list[str]:
    ours = report["cold_start"]["ours"]
    lines = ["| start-up of ours, median | " + " | ".join(ours) + " |", "| --- |" + " --- |" * len(ours)]
    phases = [c.get("phases", {}) for c in ours.values()]
    for phase in phases[0] if phases else {}:
        lines.append(f"| {phase} | " + " | ".join(f"{p.get(phase, 0):.2f} s" for p in phases) + " |")
    return lines


def _encoder_table(report: dict[str, Any]) -> list[str]:
    lines = ["| size | format | encode s | bytes |", "| --- | --- | --- | --- |"]
    for size, table in report.get("encoders", {}).items():
        for name, row in table.items():
            lines.append(f"| {size} | {name} | {row['seconds']:.3f} | {row['bytes']:,} |")
    return lines


def _latency_and_memory_tables(report: dict[str, Any]) -> list[list[str]]:
    servers = [(f"ours {b}", r) for b, r in report["warm"]["ours"].items()]
    if "baseline" in report["warm"]:
        servers.append(("baseline", report["warm"]["baseline"]))
    latency_lines = ["| server | size | stage | p50 s | p90 s | p99 s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, result in servers:
        for size, latency in result["latency"].items():
            for stage, pct in [("total", latency["total"]), *latency["stages"].items()]:
                latency_lines.append(
                    f"| {name} | {size} | {stage} | {pct['p50']:.3f} | {pct['p90']:.3f} | {pct['p99']:.3f} |"
                )
    memory_lines = ["| server | peak RSS MB |", "| --- | --- |"]
    for name, result in servers:
        memory_lines.append(f"| {name} | {result['peak_rss_mb']:.0f} |")
    return [latency_lines, memory_lines]


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["ratios"] if r["unit"] == "s"]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["baseline"] for r in rows], height=0.4, label="baseline (Remover)", color="#c44e52")
    ax.barh(y + 0.2, [r["ours"] for r in rows], height=0.4, label="ours", color="#4c72b0")
    ax.set_yticks(y, [f"{r['measure']}  ({r['ratio']:.1f}x)" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (lower is better)")
    ax.set_title(f"InSPyReNet engines vs transparent-background, {report['machine']['cpu']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
