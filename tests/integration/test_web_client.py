"""clients/web in a real headless Chromium (Debian's, driven by Playwright) against real servers on loopback.

The page is served from its own origin, the primary and the backup from two others: every call is
a real cross-origin request through the servers' CORS settings. Both servers run the toy bundle
(tests/toy_bundle.py: the real contract, a tiny model): what is tested is the client's behaviour.
"""

from __future__ import annotations

import base64
import functools
import http.server
import shutil
import socket
import threading
import time

import pytest

from tests.harness import API, REPO, free_port, photo_bytes, start_server

WEB = REPO / "clients" / "web"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_origin():
    """clients/web served by a static file server: the storefront's origin."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    port = free_port()
    handler = functools.partial(Quiet, directory=str(WEB))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def servers(toy_bundle, page_origin):
    env = {"INSPYRENET_CORS_ORIGINS": page_origin, "INSPYRENET_MAX_IN_FLIGHT": "1"}
    primary = start_server(toy_bundle, env=env)
    backup = start_server(toy_bundle, env=env)
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra's playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_origin, servers):
    primary, backup = servers
    context = browser.new_context()
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append((request.method, request.url)))
    page.goto(f"{page_origin}/demo.html?primary={primary.url}&backup={backup.url}&timeout_ms=30000")
    yield page
    context.close()


def cutout_in_page(page, data: bytes, **options) -> dict:
    """client.cutout() on a Blob of ``data``, in the page; the answer without its Blob, plus the decoded size."""
    return page.evaluate(
        """async ([b64, options]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const client = new InspyrenetClient(Object.assign({}, window.demoClient, options));
            const answer = await client.cutout(new Blob([bytes], {type: "image/jpeg"}), {format: "png"});
            const bitmap = await createImageBitmap(answer.blob);
            return {endpoint: answer.endpoint, backend: answer.backend, seconds: answer.seconds,
                    attempts: answer.attempts, type: answer.blob.type, width: bitmap.width, height: bitmap.height};
        }""",
        [base64.b64encode(data).decode(), options],
    )


def test_page_prewarms_both_endpoints_on_load(page, servers):
    primary, backup = servers
    warmed = page.evaluate("window.demoPrewarm")
    assert warmed == [
        {"endpoint": primary.url, "ok": True, "status": 200},
        {"endpoint": backup.url, "ok": True, "status": 200},
    ]
    posts = [url for method, url in page.requests if method == "POST"]
    assert posts == [f"{primary.url}/warmup", f"{backup.url}/warmup"]  # once each, before any photo


def test_picked_photo_comes_back_as_a_cutout_from_the_primary(page, servers, tmp_path):
    primary, _ = servers
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(photo_bytes(size=(451, 300)))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#status[data-endpoint]", timeout=60_000)
    assert page.get_attribute("#status", "data-endpoint") == primary.url
    assert "(onnxruntime)" in page.inner_text("#status")
    size = page.evaluate(
        "new Promise(r => { const i = document.getElementById('result');"
        " i.complete ? r([i.naturalWidth, i.naturalHeight]) : i.onload = () => r([i.naturalWidth, i.naturalHeight]); })"
    )
    assert size == [451, 300]  # decoded by the browser, at the photo's size
    assert page.evaluate("document.getElementById('progress').value") == 1  # upload progress reached the end
    assert (("POST", f"{primary.url}{API}?format=png")) in page.requests


def test_a_busy_primary_is_retried_after_retry_after_not_failed_over(page, servers):
    """The primary admits one request at a time. A request whose body trickles in holds that slot for
    3 s: meanwhile the page's cutout gets 503 + Retry-After, waits it out, and is answered by the primary."""
    primary, _ = servers
    body = photo_bytes(size=(451, 300))
    held = socket.create_connection(("127.0.0.1", primary.port))
    head = f"POST {API} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    held.sendall(head.encode() + body[:100])  # admitted: the slot is taken until the rest arrives

    def release():
        time.sleep(3)
        held.sendall(body[100:])

    threading.Thread(target=release, daemon=True).start()
    answer = cutout_in_page(page, photo_bytes(size=(451, 300)), maxRetries=10)
    statuses = [(a["endpoint"], a["status"]) for a in answer["attempts"]]
    assert statuses[0] == (primary.url, 503), statuses
    assert statuses[-1] == (primary.url, 200), statuses
    assert {endpoint for endpoint, _ in statuses} == {primary.url}  # never the backup
    assert answer["seconds"] >= 1  # Retry-After (at least 1 s) was waited out, not hammered
    assert answer["endpoint"] == primary.url
    assert (answer["width"], answer["height"]) == (451, 300)
    held.settimeout(30)
    assert held.recv(12).startswith(b"HTTP/1.1 200")  # the held request was served too
    held.close()


def test_with_the_primary_stopped_the_next_cutout_comes_from_the_backup(page, servers):
    primary, backup = servers
    assert cutout_in_page(page, photo_bytes(size=(320, 240)))["endpoint"] == primary.url
    primary.stop()
    answer = cutout_in_page(page, photo_bytes(size=(320, 240)))
    assert [(a["endpoint"], a["status"]) for a in answer["attempts"]] == [(primary.url, 0), (backup.url, 200)]
    assert answer["endpoint"] == backup.url
    assert answer["backend"] == "onnxruntime"
    assert answer["type"] == "image/png"
    assert (answer["width"], answer["height"]) == (320, 240)


def test_a_bad_image_is_refused_once_and_not_sent_to_the_backup(page, servers):
    _, backup = servers
    error = page.evaluate(
        """async () => {
            const client = new InspyrenetClient({primary: window.demoClient.backup});
            try { await client.cutout(new Blob(["not an image"], {type: "image/jpeg"}), {}); }
            catch (e) { return {name: e.name, status: e.status, endpoint: e.endpoint, detail: e.detail}; }
        }"""
    )
    assert error["name"] == "CutoutError"
    assert error["status"] in (400, 415)
    assert error["endpoint"] == backup.url
    assert error["detail"]  # the server's own words


def test_a_primary_that_never_answers_times_out_to_the_backup(page, servers):
    """A primary that accepts connections and says nothing (a hung instance): after timeoutMs, the backup."""
    _, backup = servers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held = []
    threading.Thread(target=lambda: held.extend(silent.accept() for _ in range(4)), daemon=True).start()
    hung = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        answer = cutout_in_page(page, photo_bytes(size=(320, 240)), primary=hung, timeoutMs=2000)
    finally:
        silent.close()
    assert [(a["endpoint"], a["status"]) for a in answer["attempts"]] == [(hung, 0), (backup.url, 200)]
    assert answer["endpoint"] == backup.url
    assert answer["seconds"] >= 2
