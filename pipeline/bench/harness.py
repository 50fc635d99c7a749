"""The benches' process harness: a server started as a fresh process, its health, its memory, one request.

Shared by ``inspyrenet bench``, ``load-test``, ``batch-bench`` and ``bench-cpu-service``: each server
is a real process on a loopback port (``Running``), ours (``our_server``: ``inspyrenet-serve``, what
the images run) or the stack it replaces (``baseline_server``).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

API = "/v1/remove-background"
SIZES = {"1mp": (1152, 864), "12mp": (4000, 3000)}


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    fresh_dirs: tuple[str, ...] = ()  # env vars that get a new empty directory per start
    port_argument: bool = False  # the port goes last on the command line (else $PORT)


def our_server(bundle: Path, backend: str) -> ServerSpec:
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


def baseline_server(mode: str, checkpoint: Path, fresh: bool, warm_cache: Path) -> ServerSpec:
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


def post_photo(client: httpx.Client, url: str, photo: bytes) -> tuple[float, dict[str, float], bytes]:
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


def make_photo(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    from pipeline import samples

    buffer = io.BytesIO()
    samples.photo("astronaut").resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def describe_machine() -> dict[str, Any]:
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
