"""Write the parity report: report.json, report.html with its images, a terminal summary,
and each artifact's parity summary into the bundle's manifest."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from rich.table import Table

from pipeline.parity import FP16_ISLANDS
from serving.bundle import MANIFEST_NAME, read_manifest
from serving.files import write_bytes_atomic, write_json_atomic

THUMB = 256
DIFF_GAIN = 25.0  # heatmap: a difference of 1/25 = 10 levels is full scale


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _thumb(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail((THUMB, THUMB), Image.BILINEAR)
    return img


def _heatmap(diff: np.ndarray) -> Image.Image:
    scaled = np.clip(np.nan_to_num(diff, nan=1.0) * DIFF_GAIN, 0, 1)
    colored = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return Image.fromarray(cv2.cvtColor(colored, cv2.COLOR_BGR2RGB))


class ImageSink:
    """Collects the thumbnails the HTML shows, written under ``images/``."""

    def __init__(self, report_dir: Path):
        self.dir = report_dir / "images"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[tuple[str, str], str] = {}

    def save(self, key: tuple[str, str], img: Image.Image) -> None:
        name = f"{_slug(key[0])}--{_slug(key[1])}.png"
        _thumb(img).save(self.dir / name)
        self.files[key] = f"images/{name}"

    def add_case(self, case) -> None:
        self.save((case.image.name, "input"), case.decoded)
        self.save((case.image.name, "reference"), Image.fromarray(case.end_to_end_reference, "L"))

    def add_output(self, backend: str, case, output, served: np.ndarray) -> None:
        self.save((case.image.name, backend), Image.fromarray(served, "L"))
        diff = np.abs(served.astype(np.float32) - case.end_to_end_reference.astype(np.float32)) / 255.0
        self.save((case.image.name, f"{backend}-diff"), _heatmap(diff))


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;font-size:.9em}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.passed{color:#0a7d22;font-weight:600}.failed{color:#c0111f;font-weight:600}.skipped{color:#8a6d00;font-weight:600}
.banner{padding:.8em 1em;border-radius:6px;font-size:1.2em;margin:1em 0}
.banner.passed{background:#e6f6ea}.banner.failed{background:#fde8ea}
figure{display:inline-block;margin:.3em;text-align:center;vertical-align:top}
figure img{display:block;max-width:256px;border:1px solid #ddd;background:repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/16px 16px}
figcaption{font-size:.8em;color:#555} section{border-top:1px solid #ddd;padding-top:1em}
"""


def _fmt(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render_html(report: dict[str, Any], sink: ImageSink) -> str:
    verdict = "passed" if report["passed"] else "failed"
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Parity: {html.escape(report['bundle'])}</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>Mask parity report</h1>",
           f"<p>{html.escape(report['bundle'])} &middot; mode {report['mode']} &middot; checkpoint "
           f"{html.escape(report['checkpoint']['source'])} &middot; {report['created_at']}</p>",
           f"<div class='banner {verdict}'>Overall: <span class='{verdict}'>{verdict.upper()}</span></div>",
           f"<p>References: {html.escape(str(report['references']))}</p>",
           "<h2>Backends</h2><table><tr><th>backend</th><th>precision</th><th>device</th><th>status</th>"
           "<th>summary</th><th>worst max |diff| (model)</th><th>worst IoU (end to end)</th>"
           "<th>median latency ms</th></tr>"]
    for b in report["backends"]:
        worst = b.get("worst", {})
        out.append(
            f"<tr><td>{b['label']}</td><td>{b['precision']}</td><td>{b.get('device', '-')}</td>"
            f"<td class='{b['status']}'>{b['status']}</td>"
            f"<td>{html.escape(b.get('summary') or b.get('reason') or '')}</td>"
            f"<td>{_fmt(worst['model']['max_abs']) if worst else '-'}</td>"
            f"<td>{_fmt(worst['end_to_end']['iou']) if worst else '-'}</td>"
            f"<td>{_fmt(b['latency_ms_median']) if 'latency_ms_median' in b else '-'}</td></tr>")
    out.append("</table><h2>Limits</h2><table><tr><th>class / reference</th>"
               + "".join(f"<th>{k}</th>" for k in next(iter(next(iter(report['limits'].values())).values())))
               + "</tr>")
    for cls, refs in report["limits"].items():
        for ref, limits in refs.items():
            out.append(f"<tr><td>{cls} / {ref}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in limits.values())
                       + "</tr>")
    out.append("</table><p>Model level: the artifact against the eager fp32 model on the same tensor, at the "
               "model's resolution. End to end: the served 8-bit mask against transparent-background's "
               "<code>Remover.process(type='map')</code>. Heatmaps show |served - Remover|, full scale = "
               f"{255 / DIFF_GAIN:.0f} levels.</p>")
    ran = [b for b in report["backends"] if b["status"] != "skipped"]  # with the fp16-islands row
    for image in report["images"]:
        name = image["name"]
        out.append(f"<section><h3>{html.escape(name)} <small>({image['width']}x{image['height']}, "
                   f"{html.escape(image['note'])})</small></h3>")
        for key, caption in (("input", "input"), ("reference", "Remover (reference)")):
            out.append(f"<figure><img src='{sink.files[(name, key)]}' alt='{caption}'>"
                       f"<figcaption>{caption}</figcaption></figure>")
        for b in ran:
            for key, caption in ((b["label"], f"{b['label']} mask"), (f"{b['label']}-diff", "diff")):
                if (name, key) in sink.files:
                    out.append(f"<figure><img src='{sink.files[(name, key)]}' alt='{caption}'>"
                               f"<figcaption>{caption}</figcaption></figure>")
        out.append("<table><tr><th>backend / reference</th><th>mean</th><th>p99.9</th><th>max</th><th>IoU</th>"
                   "<th>off &gt;2/255</th><th>NaN/Inf</th><th>ms</th><th>result</th></tr>")
        for b in ran:
            result = next(r for r in b["results"] if r["image"] == name)
            for ref in ("model", "end_to_end"):
                m = result["metrics"][ref]
                verdict = "passed" if not any(f.startswith(ref) for f in result["failures"]) else "failed"
                out.append(f"<tr><td>{b['label']} / {ref}</td><td>{_fmt(m['mean_abs'])}</td>"
                           f"<td>{_fmt(m['p999_abs'])}</td><td>{_fmt(m['max_abs'])}</td><td>{_fmt(m['iou'])}</td>"
                           f"<td>{_fmt(m['off_share'])}</td><td>{m['nonfinite']}</td>"
                           f"<td>{result['latency_ms']:.0f}</td><td class='{verdict}'>{verdict}</td></tr>")
        out.append("</table></section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(report: dict[str, Any], sink: ImageSink, report_dir: Path) -> None:
    write_json_atomic(report_dir / "report.json", report)
    write_bytes_atomic(report_dir / "report.html", render_html(report, sink).encode("utf-8"))


def record_in_manifest(bundle_dir: Path, report: dict[str, Any], report_dir: Path,
                       references: dict[str, Any] | None = None) -> None:
    """Each artifact's parity summary goes into the manifest, so the server can refuse a failed one.

    ``references``: the stored parity references' record (pipeline.parity_references), when new.
    """
    manifest = read_manifest(bundle_dir)
    try:
        report_path = os.path.relpath(report_dir / "report.json", bundle_dir)
    except ValueError:
        report_path = str(report_dir / "report.json")
    by_file = {b["file"]: b for b in report["backends"] if b.get("file")}
    for artifact in manifest["artifacts"]:
        result = by_file.get(artifact["file"])
        if result is None:
            continue
        artifact["parity"] = {
            "status": result["status"],
            "summary": result.get("summary") or result.get("reason"),
            "limits_class": result.get("limits_class"),
            "checked_at": report["created_at"],
            "device": result.get("device"),
            "references": report.get("references"),
            "report": report_path,
        }
    manifest["validation"] = {"status": "passed" if report["passed"] else "failed",
                              "checked_at": report["created_at"], "references": report.get("references"),
                              "report": report_path}
    islands = next((b for b in report["backends"] if b["backend"] == FP16_ISLANDS), None)
    if islands is not None and islands["status"] != "skipped":
        manifest["validation"]["fp16_islands"] = {
            "status": islands["status"], "summary": islands["summary"], "device": islands["device"],
            "worst_model_max_abs": islands["worst"]["model"]["max_abs"],
            "execution": islands["execution"],
            "note": "the TensorRT fp16 graph run by PyTorch (fp16 storage; see execution); informative, gates nothing",
        }
    elif islands is not None:
        manifest["validation"]["fp16_islands"] = {"status": "skipped", "reason": islands["reason"]}
    if references is not None:
        manifest["parity_references"] = references
    write_json_atomic(bundle_dir / MANIFEST_NAME, manifest)


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Mask parity: {'PASSED' if report['passed'] else 'FAILED'}", title_justify="left")
    for column in ("backend", "status", "worst max|d| model", "worst p99.9 e2e", "worst IoU e2e", "ms", "note"):
        table.add_column(column)
    for b in report["backends"]:
        worst = b.get("worst")
        style = {"passed": "green", "failed": "red", "skipped": "yellow"}[b["status"]]
        table.add_row(
            b["label"], f"[{style}]{b['status']}[/{style}]",
            _fmt(worst["model"]["max_abs"]) if worst else "-",
            _fmt(worst["end_to_end"]["p999_abs"]) if worst else "-",
            _fmt(worst["end_to_end"]["iou"]) if worst else "-",
            f"{b['latency_ms_median']:.0f}" if "latency_ms_median" in b else "-",
            b.get("summary") or b.get("reason") or "",
        )
    return table

