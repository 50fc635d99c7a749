"""The HTTP side: request gateway middleware and the routes LitServe does not provide.

LitServe parses a non-form body as JSON, so a raw ``image/*`` body would end
in a 500, and its worker never sees the query string. ``CutoutGateway`` sits
in front of the inference route and turns each accepted request (multipart
field ``image``, raw ``image/*`` body, or JSON ``{"image": "<base64>"}``, with
parameters in the query, the form or the JSON) into one JSON shape for the
worker, after checking the API key, the body size and every parameter. Errors
are 4xx JSON bodies ``{"detail": "..."}``. It also counts requests for
``/metrics`` and adds ``X-Total-Ms`` to inference responses.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving import runtime
from serving.metrics import metrics, render
from serving.params import ParamError, parse_params

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KNOWN_ROUTES = ("/health", "/warmup", "/metrics", "/info")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


class RequestRejected(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class CutoutGateway:
    """Pure ASGI middleware (it rewrites the request body, which BaseHTTPMiddleware cannot)."""

    def __init__(self, app, api_path: str, max_body_bytes: int, api_key: str | None):
        self.app = app
        self.api_path = api_path
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path == self.api_path or path in KNOWN_ROUTES else "other"
        status_holder = {"status": 500}
        is_inference = path == self.api_path and scope["method"] == "POST"

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if is_inference:
                    total_ms = (time.perf_counter() - start) * 1000
                    headers = list(message.get("headers", []))
                    headers.append((b"x-total-ms", f"{total_ms:.1f}".encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            if is_inference:
                try:
                    body = await self._normalise(scope, receive)
                except RequestRejected as exc:
                    await JSONResponse({"detail": exc.detail}, status_code=exc.status)(scope, receive, send_wrapper)
                    return
                scope, receive = _with_json_body(scope, body)
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            m = metrics()
            m.requests.labels(route, scope["method"], str(status_holder["status"])).inc()
            m.request_seconds.labels(route).observe(seconds)

    async def _normalise(self, scope: Scope, receive: Receive) -> bytes:
        """Check and rewrite an inference request into the worker's JSON shape."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None:
            given = headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                raise RequestRejected(401, "missing or wrong X-API-Key header")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise RequestRejected(413, f"request body is {length} bytes, over the limit of {self.max_body_bytes}")
        raw = await _read_body(receive, self.max_body_bytes)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        params: dict[str, Any] = dict(_query_params(scope))
        if content_type == "multipart/form-data" or content_type == "application/x-www-form-urlencoded":
            image, form_params = await _from_form(scope, raw)
            params.update(form_params)
        elif content_type == "application/json":
            image, json_params = _from_json(raw)
            params.update(json_params)
        elif content_type.startswith("image/") or content_type == "application/octet-stream":
            image = raw
        elif not raw:
            raise RequestRejected(400, "the request holds no image: send it as multipart field 'image', "
                                       "a raw image/* body, or JSON {\"image\": \"<base64>\"}")
        else:
            raise RequestRejected(415, f"unsupported content type {content_type or '(none)'}: send multipart/form-data, "
                                       "image/*, or application/json")
        if not image:
            raise RequestRejected(400, "the request holds no image data (empty body or empty 'image' field)")
        try:
            parsed = parse_params(params)
        except ParamError as exc:
            raise RequestRejected(400, str(exc)) from None
        payload = {"image": base64.b64encode(image).decode("ascii"), "params": parsed.to_dict()}
        return json.dumps(payload).encode("utf-8")


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRejected(400, "the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestRejected(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _query_params(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


async def _from_form(scope: Scope, raw: bytes) -> tuple[bytes, dict[str, Any]]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    request = Request(scope, replay)
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - multipart parser errors have several types
        raise RequestRejected(400, f"malformed form body: {exc}") from None
    image = b""
    params = {}
    for key, value in form.multi_items():
        if key == "image":
            image = await value.read() if isinstance(value, UploadFile) else value.encode("utf-8")
        elif isinstance(value, UploadFile):
            raise RequestRejected(400, f"unexpected file field {key!r}; send the image as field 'image'")
        else:
            params[key] = value
    await form.close()
    return image, params


def _from_json(raw: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: bad JSON, or an integer past Python's digit limit
        raise RequestRejected(400, f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise RequestRejected(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise RequestRejected(400, "JSON body must be an object with a base64 string field 'image'")
    encoded = _DATA_URL.sub("", data.pop("image").strip())
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestRejected(400, "JSON field 'image' is not valid base64") from None
    return image, data


def _with_json_body(scope: Scope, body: bytes) -> tuple[Scope, Receive]:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return {**scope, "headers": headers}, receive


# -- routes served by the HTTP process ---------------------------------------


async def warmup(request: Request) -> Response:
    """Answered at once; a web page calls it on load to wake a scaled-to-zero service."""
    states = runtime.worker_states()
    if not states:
        return JSONResponse({"status": "starting"}, status_code=503)
    state = states[0]
    return JSONResponse({
        "status": "warm",
        "backend": state["backend"],
        "device": state["device"],
        "mode": state["mode"],
        "startup_seconds": state["startup_seconds"],
        "workers_ready": len(states),
    })


async def prometheus(request: Request) -> Response:
    body, content_type = render()
    return Response(content=body, media_type=content_type)
