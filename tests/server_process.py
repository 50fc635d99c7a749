"""Start ``inspyrenet serve`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pipeline.bench.serve_bench import free_port
from tests.conftest import REPO

# A sitecustomize that makes "import torch" fail in every process of the server
# (PYTHONPATH is inherited by LitServe's spawned workers).
BLOCK_TORCH = '''
import importlib.machinery
import sys

class _NoTorch:
    """Finds torch (so availability checks still see it) but refuses to import it."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError("torch is blocked in this test: the serving path must not import it")

    def exec_module(self, module):
        raise ImportError("torch is blocked")

sys.meta_path.insert(0, _NoTorch())
'''


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    health_codes: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    bundle: Path, env: dict | None = None, block_torch: bool = True, timeout: float = 240
) -> ServerProcess:
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "INSPYRENET_HOST": "127.0.0.1", **(env or {})}
    if block_torch:
        site = Path(tempfile.mkdtemp(prefix="no-torch-"))
        (site / "sitecustomize.py").write_text(BLOCK_TORCH)
        full_env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    log_path = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--artifacts", str(bundle)],  # the serving-only command
        cwd=REPO,
        env=full_env,
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            code = httpx.get(f"{server.url}/health", timeout=5).status_code
        except httpx.TransportError:
            code = "refused"
        server.health_codes.append(code)
        if code == 200:
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not healthy after {timeout} s:\n{log_path.read_text()[-3000:]}")
