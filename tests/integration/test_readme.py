"""The README's serve and curl commands, run as written against the fast bundle."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.docs_pages import code_blocks, section
from tests.harness import REPO, free_port, photo_bytes, start_server

README = (REPO / "README.md").read_text()


def readme_commands() -> tuple[str, str]:
    serve, curl = (block.strip() for block in code_blocks(section(README, "Build, serve, cut out")))
    return serve, curl


def test_readme_serve_then_curl_cuts_out_a_photo(fast_bundle, tmp_path):
    serve, curl = readme_commands()
    assert serve.startswith(".venv/bin/inspyrenet serve ")
    assert "--port 8080" in serve
    assert curl.startswith("curl ")
    assert "127.0.0.1:8080" in curl
    assert "@photo.jpg" in curl
    port = free_port()
    # As written, but in this test's environment, on the run's bundle and a free port.
    argv = shlex.split(serve.replace("artifacts/fast", str(fast_bundle)).replace("--port 8080", f"--port {port}"))
    argv[0] = str(Path(sys.executable).parent / Path(argv[0]).name)
    server = start_server(fast_bundle, env={"INSPYRENET_HOST": "127.0.0.1"}, block_torch=False, command=argv, port=port)
    try:
        photo = photo_bytes(size=(640, 427))
        (tmp_path / "photo.jpg").write_bytes(photo)
        done = subprocess.run(
            ["bash", "-c", curl.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    finally:
        assert server.stop() == 0
    cutout = Image.open(io.BytesIO((tmp_path / "cutout.png").read_bytes()))
    assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", (640, 427))
    alpha = np.asarray(cutout)[..., 3]
    assert alpha.min() < 128 < alpha.max()  # a cutout: some background removed, some subject kept
