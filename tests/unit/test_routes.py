"""Which routes answer without the API key, and which exist at all: the real app, called in-process.

The server's FastAPI app is built as ``inspyrenet serve`` builds it (LitServe,
our gateway and routes) and called through httpx's ASGI transport; no worker
is started, so ``/health`` is 503 here.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.http import run_state
from serving.http.gateway import model_description
from serving.http.server import _build_server
from serving.settings import Settings

KEY = "s3cret-clé"  # non-ASCII: clients send it as UTF-8 bytes


MODEL = model_description("fast", (384, 384))


def get(settings: Settings, path: str, key: bytes | None = None) -> httpx.Response:
    server = _build_server(settings, usable=["onnxruntime"], verified=set(), model=MODEL)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"X-API-Key": key} if key is not None else {}
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def call(settings: Settings, path: str, key: bytes | None = None) -> int:
    return get(settings, path, key).status_code


@pytest.fixture(autouse=True)
def run_dir():
    run_state.prepare()
    yield
    run_state.cleanup()


@pytest.mark.parametrize(
    ("path", "without_key", "with_key"),
    [
        ("/health", 503, 503),  # open (Cloud Run's probes send no key); 503: no worker in this test
        ("/warmup", 503, 503),
        ("/metrics", 401, 200),
        ("/info", 200, 200),  # the model's input size: a page asks before it has a photo (clients/web)
        ("/docs", 401, 404),
        ("/redoc", 401, 404),
        ("/openapi.json", 401, 404),
        ("/", 401, 404),
        ("/no-such-route", 401, 404),
    ],
)
def test_the_key_guards_every_route_but_health_warmup_and_info(path, without_key, with_key):
    settings = Settings(api_key=KEY)
    assert call(settings, path) == without_key
    assert call(settings, path, key=b"wrong") == without_key
    assert call(settings, path, key=KEY.encode("utf-8")) == with_key


def test_settings_open_metrics_and_the_docs():
    settings = Settings(api_key=KEY, metrics_public=True, docs=True)
    assert call(settings, "/metrics") == 200
    assert call(settings, "/openapi.json") == 401  # docs on, still behind the key
    for path in ("/openapi.json", "/docs"):
        assert call(settings, path, key=KEY.encode("utf-8")) == 200


def test_without_a_key_the_docs_stay_off():
    for path in ("/docs", "/openapi.json", "/"):
        assert call(Settings(), path) == 404
    assert call(Settings(), "/metrics") == 200


def test_info_gives_the_input_size_and_the_mask_answer_without_a_key():
    """What the browser client needs to upload the photo at the model's size and ask for the mask alone;
    with INSPYRENET_DOCS on too (LitServe's own /info, its server configuration, is never served)."""
    for settings in (Settings(api_key=KEY), Settings(api_key=KEY, docs=True)):
        answer = get(settings, "/info")
        assert answer.status_code == 200
        info = answer.json()
        assert info["mode"] == "fast"
        assert (info["input"]["width"], info["input"]["height"]) == (384, 384)
        assert "bilinear" in info["input"]["resize"].lower()
        assert info["mask"]["route"] == "/v1/remove-background"
        assert info["mask"]["params"] == {"output": "mask"}
        assert set(info["mask"]["formats"]) == {"png", "webp"}
