"""The browser client (clients/web) run unmodified in a real headless Chromium, for benches and tests.

- ``WebPage``: a loopback origin that serves clients/web (the page the storefront would be), the
  photos to cut out (the page fetches them: a 24 MP photo never crosses the DevTools protocol), and
  takes back each result the page POSTs (``/collect/<id>``).
- ``chromium()``: Debian's Chromium driven by Playwright (no browser download), or one line saying
  what is missing.
- ``cutout_in_page``: one ``client.cutout()`` in a page, timed there: time to the preview, time to
  the full cutout, the client's own result fields, and the result's bytes.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEB = Path(__file__).resolve().parents[2] / "clients" / "web"
BLANK = b'<!DOCTYPE html><meta charset="utf-8"><title>cutout</title><script src="inspyrenet-client.js"></script>'


class BrowserUnavailableError(RuntimeError):
    """No Chromium or no Playwright here; the message says which and how to install it."""


@dataclass
class WebPage:
    """clients/web and the photos on a loopback origin; results POSTed back land in ``results``."""

    photos: dict[str, bytes] = field(default_factory=dict)
    results: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        page = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/photos/") and self.path[len("/photos/") :] in page.photos:
                    self._answer(page.photos[self.path[len("/photos/") :]], "image/jpeg")
                elif self.path.split("?")[0] == "/blank.html":
                    self._answer(BLANK, "text/html")
                else:
                    super().do_GET()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                page.results[self.path.removeprefix("/collect/")] = self.rfile.read(length)
                self._answer(b"{}", "application/json")

            def _answer(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(WEB)))
        threading.Thread(target=self._httpd.serve_forever, name="web-page", daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's, through Playwright): BrowserUnavailableError says what is missing."""
    path = chromium_path()
    if path is None:
        raise BrowserUnavailableError(
            "no Chromium here (Debian: apt-get install chromium; scripts/install-browser-tools.sh)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserUnavailableError("Playwright is not installed (the dev extra: pip install -e '.[dev]')") from None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


_ids = itertools.count()

# In the page: fetch the photo, prewarm the endpoints (the page's load), then one cutout, timed.
CUTOUT_IN_PAGE = """async ([photoUrl, options, params, callOptions, collect]) => {
    const photo = await (await fetch(photoUrl)).blob();
    const client = new InspyrenetClient(options);
    await client.prewarm();
    const started = performance.now();
    let preview = null;
    const call = Object.assign({}, callOptions, {
        onPreview: (p) => {
            preview = {seconds: (performance.now() - started) / 1000, width: p.width, height: p.height};
        }
    });
    try {
        const answer = await client.cutout(photo, params, call);
        const seconds = (performance.now() - started) / 1000;
        await fetch(collect, {method: "POST", body: answer.blob});
        const result = Object.assign({}, answer, {seconds: seconds, preview: preview, type: answer.blob.type});
        delete result.blob;
        return result;
    } catch (error) {
        return {error: {name: error.name, message: error.message, status: error.status, endpoint: error.endpoint,
                        detail: error.detail}};
    }
}"""


def cutout_in_page(
    page: Any,
    web: WebPage,
    photo: str,
    options: dict[str, Any],
    params: dict[str, Any] | None = None,
    call_options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bytes | None]:
    """``client.cutout(web.photos[photo], params)`` with ``new InspyrenetClient(options)`` in ``page``:
    the answer's fields (``error`` when it rejected) and the result's bytes."""
    key = f"result-{next(_ids)}"
    answer = page.evaluate(
        CUTOUT_IN_PAGE,
        [f"{web.origin}/photos/{photo}", options, params or {}, call_options or {}, f"{web.origin}/collect/{key}"],
    )
    return answer, web.results.pop(key, None)


def open_page(browser: Any, web: WebPage) -> tuple[Any, Any]:
    """A fresh context (no cache, no kept connections) and a blank page on the web origin."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{web.origin}/blank.html")
    return context, page
