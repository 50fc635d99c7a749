"""The test harness every tier shares: the repository, commands run as a user runs them, servers on
loopback ports, processes and their children, and a Python that cannot import torch.

Tests import from here (and from tests/toy_bundle.py), never from each other; the one helper the
benchmarks own (``descendants``) comes through here too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.bench.harness import descendants  # noqa: F401  (the process walk the benchmarks use)

REPO = Path(__file__).resolve().parents[1]
FAST_SIZE = (384, 384)
API = "/v1/remove-background"


# -- what this machine has ---------------------------------------------------------------------


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def has_cuda() -> bool:
    if not has_torch():
        return False
    import torch

    return torch.cuda.is_available()


# -- commands, as a user runs them -------------------------------------------------------------


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the ``inspyrenet`` command line in a new process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def invoke_cli(*args: str) -> subprocess.CompletedProcess:
    """The ``inspyrenet`` command run in this process by click's test runner: exit code, stdout and stderr
    as ``run_cli`` gives them, without a new interpreter per call (commands that import no torch)."""
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "\nState:\tZ" not in handle.read()
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], seconds: float = 15) -> list[int]:
    """Wait until none of ``pids`` runs; the ones still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


# -- a Python that cannot import torch ---------------------------------------------------------

# A sitecustomize that makes "import torch" fail in every process that inherits PYTHONPATH
# (LitServe's spawned workers included).
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


def torch_blocked_pythonpath(extra_code: str = "") -> str:
    """A PYTHONPATH whose sitecustomize blocks torch (then runs ``extra_code``), with the repository after it."""
    site = Path(tempfile.mkdtemp(prefix="no-torch-"))
    (site / "sitecustomize.py").write_text(BLOCK_TORCH + extra_code)
    return os.pathsep.join([str(site), str(REPO)])


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in the repository, where any ``import torch`` raises ImportError."""
    import textwrap

    block = "import sys; sys.modules['torch'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", block + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


# -- servers -----------------------------------------------------------------------------------


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
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

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
    bundle: Path,
    env: dict | None = None,
    block_torch: bool = True,
    timeout: float = 240,
    command: list[str] | None = None,
    port: int | None = None,
    new_session: bool = False,
) -> ServerProcess:
    """``inspyrenet-serve serve`` (the serving-only command; or ``command``, which serves on ``port``)
    on a free loopback port, once /health says 200; ``new_session``: in a process group of its own."""
    import httpx

    port = port or free_port()
    full_env = {**os.environ, "PORT": str(port), "INSPYRENET_HOST": "127.0.0.1", **(env or {})}
    if block_torch:
        full_env["PYTHONPATH"] = torch_blocked_pythonpath()
    log_path = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
    with open(log_path, "w") as log_file:  # the child holds its own copy of the descriptor
        process = subprocess.Popen(
            command or [sys.executable, "-m", "serving.cli", "serve", "--artifacts", str(bundle)],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
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


# -- requests and answers ----------------------------------------------------------------------


def photo_bytes(fmt: str = "JPEG", size=(451, 300), mode="RGB", **params) -> bytes:
    """A sample photo (chelsea), resized and encoded: a request body."""
    from pipeline import samples

    img = samples.photo("chelsea").resize(size).convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def post_image(client, data: bytes, content_type="image/jpeg", **params):
    return client.post(API, content=data, headers={"Content-Type": content_type}, params=params)


def decode(response):
    """The image of a 200 answer (a PIL image)."""
    from PIL import Image

    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def metric(text: str, name: str, **labels) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# The target an engine built on Cloud Run's L4 records in its manifest (version-compatible, lean runtime excluded).
L4_ENGINE_TARGET = {
    "gpu_name": "NVIDIA L4",
    "compute_capability": "8.9",
    "hardware_compatibility": "none",
    "version_compatible": True,
    "lean_runtime_excluded": True,
    "tensorrt_version": "11.1.0.106",
}


# -- bundles -----------------------------------------------------------------------------------


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a bundle whose big files are hard links (cheap), manifest and ONNX graph copied."""
    dst.mkdir()
    for path in src.iterdir():
        if path.is_dir():
            shutil.copytree(path, dst / path.name)  # the parity report
        elif path.name in ("manifest.json", "model.onnx"):
            shutil.copy2(path, dst / path.name)
        else:
            link_or_copy(path, dst / path.name)
    return dst


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (cheap), or a copy where ``dst`` is on another file system."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _needs_cuda():
    import pytest

    return pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU; this machine has none")


needs_cuda = _needs_cuda()


def make_certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for ``name`` it signed: (ca.pem, cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, ca: bool, names=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("inspyrenet test CA", "inspyrenet test CA", ca_key.public_key(), ca_key, ca=True)
    leaf = certificate(name, "inspyrenet test CA", leaf_key.public_key(), ca_key, False, [name])
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


# -- scripted HTTP peers -----------------------------------------------------------------------


class ScriptedServer:
    """A loopback TCP server whose every connection is handled by ``handler(sock, request_head)`` on its own
    thread: HTTP peers that misbehave on purpose (redirect elsewhere, trickle, never end, never answer)."""

    def __init__(self, handler):
        import threading

        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            with contextlib.suppress(OSError):  # the client gave up: what the misbehaving ones are for
                self.handler(conn, head)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def http_answer(status: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
