"""The server under faults and load, for real: a killed worker, a full queue, clients that leave,
slow bodies, huge headers, signals at awkward moments. Each test here failed before issue 14."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import (
    API,
    REPO,
    decode,
    descendants,
    free_port,
    metric,
    photo_bytes,
    post_image,
    run_cli,
    start_server,
    wait_gone,
)


def worker_pid(server) -> int:
    ready = [line for line in server.log_lines() if line.get("message") == "ready"]
    return ready[-1]["pid"]


def slow_request(url: str, result: dict, **params) -> threading.Thread:
    """A request that keeps the worker busy for seconds (a large image, refined)."""
    big = photo_bytes(size=(3000, 2000))

    def run() -> None:
        try:
            result["response"] = httpx.post(
                url + API,
                content=big,
                headers={"Content-Type": "image/jpeg"},
                params={"refine": "true", **params},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def faults_server(fast_bundle, tmp_path_factory):
    run_parent = tmp_path_factory.mktemp("run")
    env = {
        "INSPYRENET_MAX_IN_FLIGHT": "2",
        "INSPYRENET_BODY_TIMEOUT": "2",
        "INSPYRENET_HEADER_TIMEOUT": "2",
        "TMPDIR": str(run_parent),
    }
    process = start_server(fast_bundle, env=env)
    process.run_parent = run_parent
    yield process
    process.stop()


def taken_by(server, pid: int) -> list[Path]:
    return list(server.run_parent.glob(f"inspyrenet-run-*/taken/{pid}/*"))


def test_a_killed_worker_is_replaced_and_its_request_answered_503(faults_server):
    server = faults_server
    pid = worker_pid(server)
    result: dict = {}
    thread = slow_request(server.url, result)
    deadline = time.monotonic() + 60
    while not taken_by(server, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert taken_by(server, pid), "the worker never took the request"
    os.kill(pid, signal.SIGKILL)  # what an OOM kill does
    thread.join(timeout=60)
    response = result["response"]  # before: no response at all (the request hung, then was dropped)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "inference worker stopped" in response.json()["detail"]
    codes = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        codes.append(httpx.get(server.url + "/health", timeout=10).status_code)
        if codes[-1] == 200 and 503 in codes:
            break
        time.sleep(0.1)
    assert 503 in codes
    assert codes[-1] == 200  # 503 while no worker is warm, 200 once the new one is
    assert server.process.poll() is None  # the server lives on
    assert decode(post_image(httpx.Client(base_url=server.url, timeout=60), photo_bytes())).mode == "RGBA"
    died = [line for line in server.log_lines() if line.get("message") == "inference worker died: replacing it"]
    assert died
    assert died[0]["pid"] == pid
    assert "SIGKILL" in died[0]["cause"]
    assert worker_pid(server) != pid


def test_over_the_admission_limit_the_answer_is_503_at_once(faults_server):
    data = photo_bytes(size=(1500, 1000))
    with httpx.Client(base_url=faults_server.url, timeout=60) as client, ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: post_image(client, data, output="mask"), range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}
    assert codes.count(200) >= 2  # before: all 8 queued (and, at 50, 504s)
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert "limit of 2 requests in flight" in response.json()["detail"]
        else:
            assert decode(response).size == (1500, 1000)


def test_requests_whose_client_left_are_not_run(faults_server):
    url = faults_server.url
    before = httpx.get(url + "/metrics").text
    busy: dict = {}
    pid = worker_pid(faults_server)
    thread = slow_request(url, busy)  # keeps the worker busy while the next client waits, then leaves
    deadline = time.monotonic() + 60
    while not taken_by(faults_server, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + API, content=photo_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=0.3)
    thread.join(timeout=60)
    assert busy["response"].status_code == 200
    with httpx.Client(base_url=url, timeout=60) as client:
        assert decode(post_image(client, photo_bytes())).mode == "RGBA"
        after = client.get("/metrics").text
    assert (
        metric(after, "inspyrenet_cancelled_requests_total")
        == metric(before, "inspyrenet_cancelled_requests_total") + 1
    )
    inference = "inspyrenet_stage_seconds_count"
    assert metric(after, inference, stage="inference") == metric(before, inference, stage="inference") + 2


def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes (a request with ``Connection: close``); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_body_that_does_not_arrive_in_time_gets_408(faults_server):
    head = (
        f"POST {API} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: image/jpeg\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    answer = http_exchange(faults_server.port, head + b"\xff\xd8" * 10)  # then nothing more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 2 s" in answer


@pytest.mark.parametrize("first_request", [True, False])
def test_headers_that_do_not_arrive_in_time_close_the_connection(faults_server, first_request):
    with socket.create_connection(("127.0.0.1", faults_server.port), timeout=30) as sock:
        if not first_request:  # a kept-alive connection: the deadline restarts after each response
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
            )
            while len(body) < length and (chunk := sock.recv(65536)):  # /health's whole answer
                body += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            assert body.split()[::2] == [b"ok", b"cpu"]  # "ok <backend> <device>": what serves, and where
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and the blank line never comes
        assert sock.recv(65536) == b""  # closed by the server; before: it waited forever (recv timed out)


@pytest.mark.parametrize("size", [20 * 1024, 1024 * 1024, 64 * 1024 * 1024])
def test_huge_headers_are_refused(faults_server, size):
    header = b"X-Padding: " + b"a" * size + b"\r\n"
    try:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        answer = http_exchange(faults_server.port, head + header + b"\r\n")
    except (ConnectionResetError, BrokenPipeError):
        answer = b"HTTP/1.1 400 (connection closed while we were still sending)"
    # 431 from the gateway, or 400 from h11 when the headers outgrow its buffer mid-read;
    # before: a 64 MB header was read, and answered 200
    assert answer.split()[1] in (b"400", b"431"), answer[:200]
    assert httpx.get(faults_server.url + "/health").status_code == 200


def test_a_second_image_part_is_refused(faults_server):
    data = photo_bytes()
    response = httpx.post(
        faults_server.url + API,
        timeout=60,
        files=[("image", ("a.jpg", data, "image/jpeg")), ("image", ("b.jpg", data, "image/jpeg"))],
    )
    assert response.status_code == 400
    assert "2 'image' parts" in response.json()["detail"]


def sixteen_bit_bomb() -> bytes:
    """A small PNG of 40 MP, 16-bit: before, decoding it cost +1 GB (float64 copies)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((5000, 8000), dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_40_mp_16_bit_png_is_served(faults_server):
    data = sixteen_bit_bomb()
    assert len(data) < 200_000
    response = httpx.post(
        faults_server.url + API,
        content=data,
        headers={"Content-Type": "image/png"},
        params={"output": "mask", "max_size": "400"},
        timeout=120,
    )
    assert decode(response).size == (400, 250)


def start_in_background(bundle: Path) -> tuple[subprocess.Popen, Path]:
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-{port}.log"
    env = {**os.environ, "PORT": str(port), "INSPYRENET_HOST": "127.0.0.1"}
    with open(log, "w") as log_file:  # the child holds its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--artifacts", str(bundle)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return process, log


def spawned_worker(process: subprocess.Popen) -> int:
    """The pid of the inference worker: a child of the workers' forkserver (whose command line names it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid in descendants(process.pid):
            try:
                parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
                if b"forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes():
                    return pid
            except (OSError, IndexError):
                continue
        time.sleep(0.05)
    raise AssertionError("no inference worker was started")


def test_sigterm_during_warm_up_stops_at_once(fast_bundle):
    process, log = start_in_background(fast_bundle)
    spawned_worker(process)
    family = descendants(process.pid)
    process.send_signal(signal.SIGTERM)  # the worker is loading or warming up
    assert process.wait(timeout=15) == 0  # before: 31-35 s, the forked HTTP process swallowing the signal
    assert "SIGTERM during start-up: stopped" in log.read_text()
    assert not wait_gone(family)


def test_children_exit_when_the_main_process_is_killed(fast_bundle):
    server = start_server(fast_bundle)
    family = descendants(server.process.pid)
    assert len(family) >= 3
    server.process.kill()  # SIGKILL: no handler runs in the main process
    server.process.wait()
    assert not wait_gone(family)  # before: the HTTP process kept serving the port
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health", timeout=5)


def http_pids(server) -> list[int]:
    return next(line["http_pids"] for line in server.log_lines() if line.get("message") == "listening")


UNCLEAN = ("Traceback", "Monitoring worker crashed", "Aborted!", "Already not alive")


def test_a_killed_http_process_stops_the_server_at_once_with_one_line(toy_bundle):
    """Before: the port went dead, the main process logged nothing, and ignored SIGTERM for 45 s and more."""
    server = start_server(toy_bundle)
    family = descendants(server.process.pid)
    os.kill(http_pids(server)[0], signal.SIGKILL)
    assert server.process.wait(timeout=15) == 1  # the platform restarts the container
    log = server.log_path.read_text()
    assert log.strip().splitlines()[-1].startswith("error: the HTTP process LitServer-0 died (killed by SIGKILL")
    assert not [marker for marker in UNCLEAN if marker in log]
    assert not wait_gone(family)


def test_sigterm_to_the_whole_process_group_drains_and_exits_0(fast_bundle):
    """What ``timeout``, ``kill -- -PGID`` and systemd send. Before: exit 1, ``Monitoring worker crashed``
    and ``Aborted!`` (LitServe's manager died under the drain)."""
    server = start_server(fast_bundle, new_session=True)
    family = descendants(server.process.pid)
    result: dict = {}
    thread = slow_request(server.url, result)
    time.sleep(1.5)  # uploaded (a 3000x2000 JPEG on loopback): in flight on the worker
    os.killpg(server.process.pid, signal.SIGTERM)
    thread.join(timeout=90)
    assert server.process.wait(timeout=60) == 0
    assert result.get("response") is not None, result.get("error")
    assert result["response"].status_code == 200  # drained, not cut off
    log = server.log_path.read_text()
    assert not [marker for marker in UNCLEAN if marker in log], log[-3000:]
    assert not wait_gone(family)


def test_load_test_command_reports_back_pressure(fast_bundle, tmp_path):

    result = run_cli(
        "load-test",
        "--artifacts",
        str(fast_bundle),
        "--concurrency",
        "10",
        "--bodies",
        "2",
        "--body-mb",
        "2",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "load.json").read_text())
    burst = report["burst"]
    assert burst["only_200_and_503"]
    assert burst["all_503_have_retry_after"]
    assert burst["by_status"]["503"]["count"] >= 1
    assert burst["by_status"]["200"]["count"] >= 1
    assert report["large_bodies"]["by_status"]["415"]["count"] == 2  # random bytes: read, then refused
    assert "Only 200 and 503: True" in result.stdout


def test_load_test_without_a_bundle_is_one_line(tmp_path):

    result = run_cli("load-test", "--artifacts", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error:")


def test_a_worker_killed_during_start_up_is_reported_not_waited_for(fast_bundle):
    process, log = start_in_background(fast_bundle)
    os.kill(spawned_worker(process), signal.SIGKILL)  # an OOM kill while the model loads
    assert process.wait(timeout=60) == 1  # before: LitServe waited for that worker forever
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert errors == ["error: worker 0 died during start-up: killed by SIGKILL (out of memory?)"]


def test_an_unexpected_setup_error_is_reported_with_its_type(fast_bundle, monkeypatch):
    from serving.http import run_state
    from serving.http.api import CutoutAPI
    from serving.settings import Settings

    def broken_load(self, phases):
        raise MemoryError("cudaMalloc failed: out of memory")  # a kind LitServe would only call "failed to start"

    run_state.prepare()
    try:
        monkeypatch.setattr(CutoutAPI, "_load", broken_load)
        api = CutoutAPI(Settings(artifacts=fast_bundle), backends=["onnxruntime"], verified=set())
        with pytest.raises(MemoryError):
            api.setup("cpu")
        assert run_state.worker_errors() == ["MemoryError: cudaMalloc failed: out of memory"]
    finally:
        run_state.cleanup()


@pytest.fixture(scope="module")
def one_slot_server(toy_bundle):
    """An admission limit of 1, and image_url allowed to loopback hosts (the slow image host below)."""
    env = {
        "INSPYRENET_MAX_IN_FLIGHT": "1",
        "INSPYRENET_REMOVEBG_URL_HOSTS": "127.0.0.1",
        "INSPYRENET_REMOVEBG_URL_ALLOW_PRIVATE": "1",
        "INSPYRENET_REMOVEBG_URL_TIMEOUT": "20",
    }
    process = start_server(toy_bundle, env=env, block_torch=True)
    yield process
    process.stop()


def read_answers(sock: socket.socket, count: int) -> list[int]:
    """The statuses of ``count`` HTTP/1.1 answers with Content-Length bodies, read off ``sock`` in order."""
    buffer, statuses = b"", []
    while len(statuses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {statuses}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        statuses.append(int(head.split()[1]))
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
    return statuses


@pytest.mark.parametrize("route", [API, "/v1.0/removebg"])
def test_at_limit_one_a_request_right_behind_an_answer_is_admitted(one_slot_server, route):
    """Two requests pipelined on one connection: uvicorn starts the second the moment the first answer is
    written. The slot is given back when the worker's answer starts, so the second is admitted, not refused."""
    photo = photo_bytes(size=(320, 240))
    content_type = "image/jpeg" if route == API else "application/json"
    body = photo if route == API else json.dumps({"image_file_b64": base64.b64encode(photo).decode()}).encode()
    request = (
        f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", one_slot_server.port), timeout=60) as sock:
        sock.sendall(request * 3)
        assert read_answers(sock, 3) == [200, 200, 200]


def test_a_client_that_leaves_during_a_slow_image_fetch_frees_its_slot_at_once(one_slot_server):
    """image_url on a host that never answers holds the only slot; the client leaves after 0.5 s: the fetch
    is cancelled and the slot freed then, not when the fetch's 20 s deadline passes."""
    from tests.harness import ScriptedServer

    silent = ScriptedServer(lambda conn, head: time.sleep(30))
    try:
        body = json.dumps({"image_url": f"{silent.url}/slow.jpg"}).encode()
        head = (
            f"POST /v1.0/removebg HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        leaving = socket.create_connection(("127.0.0.1", one_slot_server.port))
        leaving.sendall(head.encode() + body)
        deadline = time.monotonic() + 10
        while not silent.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert silent.requests, "the server never fetched the image URL"
        time.sleep(0.5)
        leaving.close()
        time.sleep(0.5)
        with httpx.Client(base_url=one_slot_server.url, timeout=30) as http:
            answer = http.post(API, content=photo_bytes(size=(320, 240)), headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text  # not 503: the slot is free
    finally:
        silent.close()
