"""``inspyrenet bench``: our server against the stack it replaces, on this machine, in one run.

Both sides are real HTTP servers started as fresh processes:

- ours: ``inspyrenet serve`` on the bundle, one backend at a time;
- baseline: ``pipeline.bench.baseline_server``, what the current API does
  (``Remover`` built in the process, ``process(type='rgba')``, Pillow PNG),
  with empty numba and transparent-background caches (a new container:
  ``fresh``) and with warm ones (``warm``).

Measured: cold start (spawn -> /health 200 -> first response, median of
``--runs``), warm latency by stage for 1 MP and 12 MP JPEGs (p50/p90/p99),
throughput at concurrency 1, 4 and 16, and the peak RSS of each server's
process tree. Ratios are baseline / ours.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipeline.bench import cpu_precision

API = "/v1/remove-background"
SIZES = {"1mp": (1152, 864), "12mp": (4000, 3000)}
CONCURRENCY = (1, 4, 16)


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    fresh_dirs: tuple[str, ...] = ()  # env vars that get a new empty directory per start
    port_argument: bool = False  # the port goes last on the command line (else $PORT)


def ours(bundle: Path, backend: str) -> ServerSpec:
    return ServerSpec(
        f"ours ({backend})",
        [
            sys.executable,
            "-m",
            "serving.cli",  # inspyrenet-serve, what the images run
            "serve",
            "--artifacts",
            str(bundle),
            "--backend",
            backend,
            "--host",
            "127.0.0.1",
        ],
    )


def baseline(mode: str, checkpoint: Path, fresh: bool, warm_cache: Path) -> ServerSpec:
    argv = [sys.executable, "-m", "pipeline.bench.baseline_server", mode, str(checkpoint)]
    if fresh:
        return ServerSpec(
            "baseline (fresh caches)",
            argv,
            port_argument=True,
            fresh_dirs=("NUMBA_CACHE_DIR", "TRANSPARENT_BACKGROUND_FILE_PATH"),
        )
    env = {"NUMBA_CACHE_DIR": str(warm_cache / "numba"), "TRANSPARENT_BACKGROUND_FILE_PATH": str(warm_cache / "tb")}
    return ServerSpec("baseline (warm caches)", argv, env=env, port_argument=True)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """One started server process."""

    def __init__(self, spec: ServerSpec):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.temp = [Path(tempfile.mkdtemp(prefix="bench-cache-")) for _ in spec.fresh_dirs]
        env = {
            **os.environ,
            "PORT": str(self.port),
            "NO_ALBUMENTATIONS_UPDATE": "1",
            **spec.env,
            **{name: str(path) for name, path in zip(spec.fresh_dirs, self.temp)},
        }
        argv = spec.argv + ([str(self.port)] if spec.port_argument else [])
        self.log = Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1])
        self.started = time.perf_counter()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def startup_phases(self) -> dict[str, float]:
        return startup_phases(self.log.read_text(errors="replace"))

    def wait_healthy(self, timeout: float = 900) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} before it was healthy")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not healthy within {timeout} s")

    def peak_rss_mb(self) -> float:
        """Sum of the peak resident set (VmHWM) over the server's process tree."""
        return sum(memory_kb(pid) for pid in [self.process.pid, *descendants(self.process.pid)]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for path in self.temp:
            shutil.rmtree(path, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def startup_phases(log: str) -> dict[str, float]:
    """Our server's start-up, from its JSON log lines: what stays on a GPU (spawn and imports, verify,
    load) and the warm-up inference; empty for a server that does not log phases (the baseline)."""
    seen: dict[str, float] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("message") == "startup phase" and record.get("worker", "0") == "0":
            phase = record["phase"]
            seen[phase] = seen.get(phase, 0.0) + record["seconds"]  # manifest and verify: main, then worker
    if "total" not in seen:
        return {}
    verify, load, warmup = seen.get("verify", 0.0), seen.get("load", 0.0), seen.get("warmup", 0.0)
    return {
        "spawn and imports": seen["total"] - verify - load - warmup,
        "verify": verify,
        "load": load,
        "outside warm-up": seen["total"] - warmup,
        "warm-up inference": warmup,
        "total": seen["total"],
    }


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def memory_kb(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a process from /proc (VmHWM: its peak resident set; VmRSS: now); 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def post(client: httpx.Client, url: str, photo: bytes) -> tuple[float, dict[str, float], bytes]:
    """One request: its time as the client saw it, the server's stages (Server-Timing), the body."""
    start = time.perf_counter()
    response = client.post(f"{url}{API}", content=photo, headers={"Content-Type": "image/jpeg"})
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    stages = {}
    for part in response.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration) / 1000
    if "inference" in stages:  # ours: what stays on the CPU when the model runs on a GPU
        stages["outside inference"] = elapsed - stages["inference"]
        stages["framework"] = elapsed - sum(v for k, v in stages.items() if k != "outside inference")
    return elapsed, stages, response.content


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}


def cold_start(spec: ServerSpec, photo: bytes, runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    samples = []
    for run in range(runs):
        progress(f"{spec.name}: cold start {run + 1}/{runs}")
        server = Running(spec)
        try:
            healthy = server.wait_healthy()
            with httpx.Client(timeout=600) as client:
                post(client, server.url, photo)
            samples.append(
                {
                    "health_s": healthy,
                    "first_response_s": time.perf_counter() - server.started,
                    "phases": server.startup_phases(),
                }
            )
        finally:
            server.stop()
    result = {key: float(np.median([s[key] for s in samples])) for key in ("health_s", "first_response_s")}
    phases = [s["phases"] for s in samples if s["phases"]]
    if phases:
        result["phases"] = {name: float(np.median([p[name] for p in phases])) for name in phases[0]}
    return result | {"runs": samples}


def warm(spec: ServerSpec, photos: dict[str, bytes], runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    # Throughput wants every concurrent request admitted, not answered 503 (the baseline ignores this).
    admit_all = {"INSPYRENET_MAX_IN_FLIGHT": str(max(CONCURRENCY))}
    server = Running(replace(spec, env={**spec.env, **admit_all}))
    try:
        server.wait_healthy()
        result: dict[str, Any] = {"latency": {}, "throughput_rps": {}}
        with httpx.Client(timeout=900) as client:
            for size, photo in photos.items():
                post(client, server.url, photo)  # first request of a size warms caches
                totals, stages = [], {}
                for run in range(runs):
                    progress(f"{spec.name}: warm {size} {run + 1}/{runs}")
                    elapsed, timing, body = post(client, server.url, photo)
                    result.setdefault("cutouts", {})[size] = body
                    totals.append(elapsed)
                    for name, seconds in timing.items():
                        stages.setdefault(name, []).append(seconds)
                result["latency"][size] = {
                    "total": percentiles(totals),
                    "stages": {k: percentiles(v) for k, v in stages.items()},
                }
        photo = photos["1mp"]
        for concurrency in CONCURRENCY:
            progress(f"{spec.name}: throughput at concurrency {concurrency}")
            count = max(2 * concurrency, 8)
            with httpx.Client(timeout=900, limits=httpx.Limits(max_connections=concurrency)) as client:
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    list(pool.map(lambda _: post(client, server.url, photo), range(count)))
                result["throughput_rps"][str(concurrency)] = count / (time.perf_counter() - start)
        result["peak_rss_mb"] = server.peak_rss_mb()
        return result
    finally:
        server.stop()


def encoders(cutouts: dict[str, bytes], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """Bytes and encode time (median) of each response format on real cutouts, in this process."""
    import io

    from PIL import Image

    from serving.imaging.cutout import encode

    def pillow_png(img: Image.Image) -> bytes:  # the encoder the server used before serving.imaging.png
        buffer = io.BytesIO()
        img.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    formats: dict[str, Callable[[Image.Image], bytes]] = {
        "png": lambda img: encode(np.asarray(img), "png"),
        "png, Pillow zlib level 1": pillow_png,
        "webp lossless": lambda img: encode(np.asarray(img), "webp"),
        "webp quality 90": lambda img: encode(np.asarray(img), "webp", 90),
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for size, body in cutouts.items():
        img = Image.open(io.BytesIO(body))
        img.load()
        table[size] = {}
        for name, function in formats.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                data = function(img)
                times.append(time.perf_counter() - start)
            table[size][name] = {"seconds": float(np.median(times)), "bytes": len(data)}
    return table


def make_photo(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    from pipeline import samples

    buffer = io.BytesIO()
    samples.photo("astronaut").resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    from pipeline.environment import package_version
    from pipeline.export.onnx_int8 import cpu_flags, instruction_set

    return {
        "cpu": cpu,
        "instruction_set": instruction_set(cpu_flags()),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: package_version(name)
            for name in ("torch", "onnxruntime", "litserve", "transparent-background", "pymatting", "pillow")
        },
    }


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
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']} ({m.get('instruction_set', '?')}), {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"mode {report['mode']}, "
        f"checkpoint {report['checkpoint']}, medians of {report['runs']} runs.",
        "",
        "| measure | ours | baseline | advantage |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["ratios"]:
        lines.append(
            f"| {row['measure']} | {row['ours']:.2f} {row['unit']} | {row['baseline']:.2f} {row['unit']} "
            f"| {row['ratio']:.1f}x |"
        )
    lines += [
        "",
        "| start-up of ours, median | " + " | ".join(report["cold_start"]["ours"]) + " |",
        "| --- |" + " --- |" * len(report["cold_start"]["ours"]),
    ]
    phases = [c.get("phases", {}) for c in report["cold_start"]["ours"].values()]
    for phase in phases[0] if phases else {}:
        lines.append(f"| {phase} | " + " | ".join(f"{p.get(phase, 0):.2f} s" for p in phases) + " |")
    precision = cpu_precision.comparison_rows(report)
    if precision:
        lines += ["", *precision]
    lines += ["", "| size | format | encode s | bytes |", "| --- | --- | --- | --- |"]
    for size, table in report.get("encoders", {}).items():
        for name, row in table.items():
            lines.append(f"| {size} | {name} | {row['seconds']:.3f} | {row['bytes']:,} |")
    lines += ["", "| server | size | stage | p50 s | p90 s | p99 s |", "| --- | --- | --- | --- | --- | --- |"]
    servers = [(f"ours {b}", r) for b, r in report["warm"]["ours"].items()]
    if "baseline" in report["warm"]:
        servers.append(("baseline", report["warm"]["baseline"]))
    for name, result in servers:
        for size, latency in result["latency"].items():
            for stage, pct in [("total", latency["total"]), *latency["stages"].items()]:
                lines.append(f"| {name} | {size} | {stage} | {pct['p50']:.3f} | {pct['p90']:.3f} | {pct['p99']:.3f} |")
    lines += ["", "| server | peak RSS MB |", "| --- | --- |"]
    for name, result in servers:
        lines.append(f"| {name} | {result['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


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


def run_bench(
    bundle: Path,
    checkpoint: Path,
    backends: list[str],
    runs: int,
    out: Path,
    progress: Callable[[str], None],
    with_baseline: bool = True,
) -> dict[str, Any]:
    from serving.bundle import load_bundle

    manifest = load_bundle(bundle, verify=True).manifest
    mode = manifest.mode
    photos = {name: make_photo(size) for name, size in SIZES.items()}
    warm_cache = Path(tempfile.mkdtemp(prefix="bench-warm-cache-"))
    report: dict[str, Any] = {
        "machine": machine(),
        "mode": mode,
        "runs": runs,
        "checkpoint": manifest.checkpoint.source,
        "photos": {name: f"{w}x{h} JPEG q90" for name, (w, h) in SIZES.items()},
        "cold_start": {"ours": {}},
        "warm": {"ours": {}},
    }
    try:
        for backend in backends:
            report["cold_start"]["ours"][backend] = cold_start(ours(bundle, backend), photos["12mp"], runs, progress)
        warm_spec = baseline(mode, checkpoint, fresh=False, warm_cache=warm_cache)
        if with_baseline:
            cold_start(warm_spec, photos["12mp"], 1, progress)  # fills the warm caches
            report["cold_start"]["baseline_warm"] = cold_start(warm_spec, photos["12mp"], runs, progress)
            report["cold_start"]["baseline_fresh"] = cold_start(
                baseline(mode, checkpoint, fresh=True, warm_cache=warm_cache), photos["12mp"], runs, progress
            )
        for backend in backends:
            report["warm"]["ours"][backend] = warm(ours(bundle, backend), photos, runs, progress)
        if with_baseline:
            report["warm"]["baseline"] = warm(warm_spec, photos, runs, progress)
            report["warm"]["baseline"].pop("cutouts", None)
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
    report["cpu_precision"] = cpu_precision.measure(bundle, backends, runs, progress)
    cutouts = {}
    for result in report["warm"]["ours"].values():
        cutouts = result.pop("cutouts", cutouts)
    progress("encoders")
    report["encoders"] = encoders(cutouts, runs)
    report["ratios"] = ratios(report) if with_baseline else []
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(report) + "\n")
    if report["ratios"]:
        chart(report, out / "bench.png")
    return report
