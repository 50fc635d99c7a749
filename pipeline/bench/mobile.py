"""``inspyrenet bench-mobile``: what a shopper on a phone waits for, the mobile path against today's.

The unmodified browser client (clients/web) runs in headless Chromium against ``inspyrenet-serve``
on loopback, through the project's link shaper (``pipeline.bench.link_shaper``: a loopback proxy
that paces each direction and delays each byte). For every link and photo size it measures, from
``client.cutout()`` to its answer, on a page that has loaded and prewarmed (the user picked a photo):

- the mobile path (the client's default): time to the preview, time to the full cutout, the
  bytes that crossed the link each way (headers and CORS preflights included);
- today's path (``compose: "server"``): the photo as it is, the server's RGBA PNG back; skipped
  where its transfer alone would take longer than ``baseline_budget`` seconds (said in the table).

Then the parity of the two paths' cutouts on real photos (scikit-image's, one with EXIF orientation
6; ``compare_cutouts``), and with ``sweep`` the upload settings the client's defaults were chosen
from: every setting's bytes and parity on the same photos.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipeline.bench.browser import WebPage, chromium, cutout_in_page, open_page
from pipeline.bench.harness import API, Running, describe_machine, our_server
from pipeline.bench.link_shaper import LINKS, LinkShaper

MOBILE_FILE = "mobile.json"
# Photo sizes (megapixels -> stored width x height). The 12 MP one is stored landscape with EXIF
# orientation 6, as phones write portraits: it decodes to 3000 x 4000.
SIZES = {1: (1152, 864), 12: (4000, 3000), 24: (6000, 4000)}
ROTATED = 12
PARITY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
# What the client's upload defaults were chosen from (clients/web: uploadSize, uploadType, uploadQuality).
SWEEP: list[dict[str, Any]] = [
    {"label": "lossless (WebP where exact, else PNG), model size", "uploadType": "lossless"},
    {"label": "PNG, model size", "uploadType": "image/png"},
    {"label": "JPEG q1.0, model size", "uploadType": "image/jpeg", "uploadQuality": 1.0},
    {"label": "JPEG q0.95, model size", "uploadType": "image/jpeg", "uploadQuality": 0.95},
    {"label": "JPEG q0.9, model size", "uploadType": "image/jpeg", "uploadQuality": 0.9},
    {"label": "JPEG q0.8, model size", "uploadType": "image/jpeg", "uploadQuality": 0.8},
    {"label": "lossless, long side 768 (aspect kept)", "uploadType": "lossless", "uploadSize": 768},
]
BYTES_PER_PIXEL_RGBA_PNG = 2.0  # today's answer, for the baseline's time estimate (23.4 MB for 12 MP)


GRAIN = 7.0  # sensor-like noise (8-bit levels): a 12 MP JPEG then weighs 2.9 MB, as a phone's does


def phone_photo(name: str, size: tuple[int, int], orientation: int | None = None) -> bytes:
    """A scikit-image photo upscaled to ``size`` with grain, as a JPEG (quality 90), with an EXIF orientation tag.

    Upscaled alone, a 12 MP photo compresses to 1.0 MB, a third of what a phone's weighs: the grain
    gives the upload today's path carries its real size."""
    from PIL import Image

    from pipeline import samples

    pixels = np.asarray(samples.photo(name).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    pixels += np.random.default_rng(0).normal(0, GRAIN, pixels.shape).astype(np.float32)
    img = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    img.save(buffer, format="JPEG", quality=90, **extra)
    return buffer.getvalue()


def decode_rgba(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGBA"))


def compare_cutouts(candidate: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Two RGBA cutouts of one photo: alpha's mean absolute difference and 99.9th percentile (in 8-bit
    levels), IoU of alpha at 0.5, and how far the RGB of pixels the reference shows (alpha > 0.5) moved."""
    if candidate.shape != reference.shape:
        return {"shape": f"{candidate.shape[1]}x{candidate.shape[0]} vs {reference.shape[1]}x{reference.shape[0]}"}
    a = candidate[..., 3].astype(np.int16)
    b = reference[..., 3].astype(np.int16)
    difference = np.abs(a - b)
    union = np.count_nonzero((a > 127) | (b > 127))
    shown = b > 127
    rgb = np.abs(candidate[..., :3].astype(np.int16) - reference[..., :3].astype(np.int16))[shown]
    return {
        "alpha_mean": round(float(difference.mean()), 4),
        "alpha_p999": float(np.percentile(difference, 99.9)),
        "iou": round(np.count_nonzero((a > 127) & (b > 127)) / union, 5) if union else 1.0,
        "rgb_max": int(rgb.max()) if rgb.size else 0,
        "rgb_changed": round(float(np.count_nonzero(rgb.max(axis=-1)) / max(1, len(rgb))), 6),
    }


def server_cutout(url: str, photo: bytes) -> bytes:
    """Today's cutout of the photo: ``output=rgba`` PNG, straight from the server."""
    response = httpx.post(url + API, content=photo, headers={"Content-Type": "image/jpeg"}, timeout=600)
    response.raise_for_status()
    return response.content


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _timed_cutouts(
    page: Any, web: WebPage, shaper: LinkShaper, photo: str, options: dict[str, Any], runs: int
) -> dict[str, Any]:
    """``runs`` cutouts of one photo through the shaper: medians of the preview and full times, the bytes."""
    previews, totals, ups, downs, last = [], [], [], [], {}
    for _ in range(runs):
        shaper.reset_counters()
        answer, _ = cutout_in_page(page, web, photo, {"primary": shaper.url, "timeoutMs": 900_000, **options})
        if "error" in answer:
            raise RuntimeError(f"the cutout of {photo} failed: {answer['error']}")
        totals.append(answer["seconds"])
        if answer.get("preview"):
            previews.append(answer["preview"]["seconds"])
        ups.append(shaper.bytes_up)
        downs.append(shaper.bytes_down)
        last = answer
    return {
        "preview_s": _median(previews),
        "full_s": _median(totals),
        "runs": totals,
        "bytes_up": int(statistics.median(ups)),
        "bytes_down": int(statistics.median(downs)),
        "composed_in": last.get("composedIn"),
        "size": [last.get("width"), last.get("height")],
        "client_timings": last.get("timings"),
    }


def run_mobile_bench(
    bundle: Path,
    backend: str,
    links: list[str],
    sizes: list[int],
    runs: int,
    baseline_runs: int,
    baseline_budget: float,
    sweep: bool,
    out: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    progress("starting the server")
    web = WebPage()
    spec = our_server(bundle, backend)
    spec.env["INSPYRENET_CORS_ORIGINS"] = web.origin  # the page calls the server cross-origin, as a storefront
    server = Running(spec)
    shapers: dict[str, LinkShaper] = {}
    report: dict[str, Any] = {"machine": describe_machine(), "bundle": str(bundle), "backend": backend}
    try:
        report["server_start_s"] = round(server.wait_healthy(), 2)
        for size in sizes:
            web.photos[f"{size}mp.jpg"] = phone_photo("astronaut", SIZES[size], 6 if size == ROTATED else None)
        for name in PARITY_PHOTOS:
            web.photos[f"parity-{name}.jpg"] = phone_photo(name, SIZES[12], 6 if name == "astronaut" else None)
        report["photos"] = {name: len(data) for name, data in web.photos.items()}
        with chromium() as browser:
            context, page = open_page(browser, web)
            try:
                report["links"] = {}
                for link_name in links:
                    link = LINKS[link_name]
                    shapers[link_name] = shaper = LinkShaper(server.port, link)
                    shaper.start()
                    progress(f"{link.describe()}: a warm-up cutout")
                    _timed_cutouts(page, web, shaper, f"{sizes[0]}mp.jpg", {}, 1)  # warm: the server, the page
                    rows = []
                    for size in sizes:
                        photo = f"{size}mp.jpg"
                        progress(f"{link.describe()}: {size} MP, the mobile path")
                        row: dict[str, Any] = {"megapixels": size, "photo_bytes": len(web.photos[photo])}
                        row["mobile"] = _timed_cutouts(page, web, shaper, photo, {}, runs)
                        estimate = _baseline_estimate(link_name, len(web.photos[photo]), size)
                        if estimate > baseline_budget:
                            row["today"] = {"skipped": f"its transfer alone would take about {estimate:.0f} s here"}
                        else:
                            progress(f"{link.describe()}: {size} MP, today's path (about {estimate:.0f} s of transfer)")
                            row["today"] = _timed_cutouts(
                                page, web, shaper, photo, {"compose": "server"}, baseline_runs
                            )
                        rows.append(row)
                    report["links"][link_name] = {"link": link.describe(), "rows": rows}
                loopback = shapers.get("loopback") or _started(shapers, server.port)
                progress("parity: the mobile path against the server's cutout")
                report["parity"] = _parity(page, web, server.url, loopback, [{"label": "the client's defaults"}])
                if sweep:
                    progress("parity: the upload settings")
                    report["sweep"] = _parity(page, web, server.url, loopback, SWEEP)
            finally:
                context.close()
    finally:
        for shaper in shapers.values():
            shaper.stop()
        web.close()
        server.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / MOBILE_FILE).write_text(json.dumps(report, indent=2))
    return report


def _started(shapers: dict[str, LinkShaper], port: int) -> LinkShaper:
    shapers["loopback"] = shaper = LinkShaper(port, LINKS["loopback"])
    shaper.start()
    return shaper


def _baseline_estimate(link_name: str, photo_bytes: int, megapixels: int) -> float:
    link = LINKS[link_name]
    if link.up_bits_per_s is None or link.down_bits_per_s is None:
        return 0.0
    answer = megapixels * 1e6 * BYTES_PER_PIXEL_RGBA_PNG
    return photo_bytes * 8 / link.up_bits_per_s + answer * 8 / link.down_bits_per_s


def _parity(
    page: Any, web: WebPage, server_url: str, shaper: LinkShaper, settings: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each setting, each parity photo: the mobile path's cutout against the server's, and the bytes."""
    references = {}
    for name in PARITY_PHOTOS:
        references[name] = decode_rgba(server_cutout(server_url, web.photos[f"parity-{name}.jpg"]))
    rows = []
    for setting in settings:
        options = {key: value for key, value in setting.items() if key != "label"}
        photos = {}
        for name in PARITY_PHOTOS:
            shaper.reset_counters()
            answer, body = cutout_in_page(page, web, f"parity-{name}.jpg", {"primary": shaper.url, **options})
            if "error" in answer or body is None:
                raise RuntimeError(f"the cutout of {name} failed: {answer.get('error')}")
            photos[name] = {
                **compare_cutouts(decode_rgba(body), references[name]),
                "upload_bytes": answer["bytesSent"],
                "mask_bytes": answer["bytesReceived"],
                "upload_type": answer.get("uploadType"),
            }
        rows.append({"setting": setting["label"], "options": options, "photos": photos, "worst": _worst(photos)})
    return rows


def _worst(photos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = list(photos.values())
    return {
        "alpha_mean": max(v["alpha_mean"] for v in values),
        "alpha_p999": max(v["alpha_p999"] for v in values),
        "iou": min(v["iou"] for v in values),
        "rgb_max": max(v["rgb_max"] for v in values),
        "upload_bytes": int(statistics.median(v["upload_bytes"] for v in values)),
        "mask_bytes": int(statistics.median(v["mask_bytes"] for v in values)),
    }


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']} ({machine['cores']} cores, {machine['instruction_set']}); "
        f"bundle {report['bundle']}, {report['backend']}; server healthy in {report['server_start_s']} s.",
        "",
        "| link | photo | mobile: preview | mobile: full cutout | mobile: bytes up / down | "
        "today: cutout | today: bytes up / down | time | bytes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in report["links"].values():
        for row in entry["rows"]:
            mobile, today = row["mobile"], row["today"]
            mobile_bytes = mobile["bytes_up"] + mobile["bytes_down"]
            if "skipped" in today:
                today_cells = [f"skipped: {today['skipped']}", "", "", ""]
            else:
                today_bytes = today["bytes_up"] + today["bytes_down"]
                today_cells = [
                    f"{today['full_s']:.2f} s",
                    f"{_mb(today['bytes_up'])} / {_mb(today['bytes_down'])}",
                    f"{mobile['full_s'] / today['full_s']:.3f}x",
                    f"{100 * mobile_bytes / today_bytes:.2f}%",
                ]
            preview = f"{mobile['preview_s']:.2f} s" if mobile["preview_s"] is not None else "-"
            lines.append(
                "| "
                + " | ".join(
                    [
                        entry["link"].split(":")[0].replace(" (unshaped)", ""),
                        f"{row['megapixels']} MP ({_mb(row['photo_bytes'])})",
                        preview,
                        f"{mobile['full_s']:.2f} s",
                        f"{_mb(mobile['bytes_up'])} / {_mb(mobile['bytes_down'])}",
                        *today_cells,
                    ]
                )
                + " |"
            )
    lines += ["", "Links: " + "; ".join(entry["link"] for entry in report["links"].values()) + "."]
    for title, key in (("Parity, the client's defaults", "parity"), ("Upload settings", "sweep")):
        if key not in report:
            continue
        lines += [
            "",
            f"{title} (worst of {len(PARITY_PHOTOS)} photos at 12 MP; alpha in 8-bit levels, against today's cutout):",
            "",
            "| setting | upload (median) | mask (median) | alpha mean | alpha p99.9 | IoU at 0.5 "
            "| RGB where alpha > 0.5 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in report[key]:
            worst = row["worst"]
            rgb = "exact" if worst["rgb_max"] == 0 else f"max {worst['rgb_max']}"
            lines.append(
                f"| {row['setting']} | {worst['upload_bytes'] / 1000:.0f} kB | {worst['mask_bytes'] / 1000:.1f} kB | "
                f"{worst['alpha_mean']:.3f} | {worst['alpha_p999']:g} | {worst['iou']:.4f} | "
                f"{rgb} |"
            )
    return "\n".join(lines)


def _mb(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"
