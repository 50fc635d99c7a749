"""The HTTP side: request gateway middleware and the routes LitServe does not provide.

``CutoutGateway`` sits in front of every route:

- the API key, when set, is checked on every route but ``/health`` and
  ``/warmup`` (and ``/metrics`` when ``INSPYRENET_METRICS_PUBLIC`` opens it);
- an inference request is admitted only while fewer than the admission limit
  are in flight, else 503 with ``Retry-After`` at once, before its body is read;
- the image (multipart field ``image``, raw ``image/*`` body, or JSON
  ``{"image": "<base64>"}``) is streamed into a hand-off file within the body
  size and read-time limits, parameters (query, form or JSON) are checked, and
  LitServe's route receives only ``{"id": ..., "params": {...}}``;
- while the worker runs it, the gateway watches the client (one that
  disconnects has its request cancelled: a worker that has not started it
  skips it), the worker (one that dies gets its requests answered 503 at
  once) and the request deadline (504).

Errors are 4xx/5xx JSON bodies ``{"detail": "..."}``. It also counts requests
for ``/metrics`` and adds ``X-Total-Ms`` to inference responses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from serving.http import handoff, run_state
from serving.http.admission import Admission
from serving.http.metrics import metrics, render
from serving.http.params import ParamError, parse_params
from serving.http.settings import Settings
from serving.logs import log

KNOWN_ROUTES = ("/health", "/warmup", "/metrics", "/info")
OPEN_ROUTES = ("/health", "/warmup")  # Cloud Run's probes and a page's wake-up call send no key
WATCH_SECONDS = 0.2  # how often a waiting request looks for a dead worker
COPY_CHUNK = 1024 * 1024
# data:[<media type>][;<parameter>=<value>]*;base64,<data>  (RFC 2397)
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


class RequestRejected(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=self.headers)


class CutoutGateway:
    """Pure ASGI middleware (it replaces the request body, which BaseHTTPMiddleware cannot)."""

    def __init__(self, app, api_path: str, settings: Settings, admission: Admission):
        self.app = app
        self.api_path = api_path
        self.settings = settings
        self.admission = admission
        self.open_routes = OPEN_ROUTES + (("/metrics",) if settings.metrics_public else ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path == self.api_path or path in KNOWN_ROUTES else "other"
        status_holder = {"status": 500}
        is_inference = path == self.api_path and scope["method"] == "POST"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if is_inference:
                    total_ms = (time.perf_counter() - start) * 1000
                    headers = list(message.get("headers", []))
                    headers.append((b"x-total-ms", f"{total_ms:.1f}".encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            header_bytes = sum(len(key) + len(value) for key, value in scope["headers"])
            if header_bytes > self.settings.max_header_bytes:
                # h11 refuses larger headers only when they arrive over several reads; this is the hard limit.
                await RequestRejected(
                    431, f"request headers are {header_bytes} bytes, over the limit of {self.settings.max_header_bytes}"
                ).response()(scope, receive, send_wrapper)
            elif self.settings.api_key is not None and path not in self.open_routes and not self._key_matches(scope):
                await RequestRejected(401, "missing or wrong X-API-Key header").response()(scope, receive, send_wrapper)
            elif is_inference:
                await self._inference(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            m = metrics()
            m.requests.labels(route, scope["method"], str(status_holder["status"])).inc()
            m.request_seconds.labels(route).observe(seconds)

    def _key_matches(self, scope: Scope) -> bool:
        given = next((value for key, value in scope["headers"] if key.lower() == b"x-api-key"), b"")
        key = self.settings.api_key or ""
        return hmac.compare_digest(given, key.encode("utf-8"))

    # -- inference ---------------------------------------------------------

    async def _inference(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.admission.try_enter():
            wait = self.admission.retry_after()
            await RequestRejected(
                503,
                f"the server is at its limit of {self.admission.limit} requests in flight; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            ).response()(scope, receive, send)
            return
        slot = Slot(self.admission)
        request_id = handoff.new_id()
        try:
            try:
                params = await self._receive_image(scope, receive, request_id)
            except RequestRejected as exc:
                await exc.response()(scope, receive, send)
                return
            body = json.dumps({"id": request_id, "params": params}).encode("utf-8")
            inner_scope, inner_receive = _with_json_body(scope, body)
            await self._await_worker(inner_scope, inner_receive, receive, send, request_id, slot)
        finally:
            handoff.cancel(request_id)
            slot.release()

    async def _receive_image(self, scope: Scope, receive: Receive, request_id: str) -> dict[str, Any]:
        """Stream the request's image into its hand-off file; return the checked parameters."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.settings.max_body_bytes
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > limit:
            raise RequestRejected(413, f"request body is {length} bytes, over the limit of {limit}")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        body = BodyReader(receive, limit, self.settings.body_timeout)
        params: dict[str, Any] = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        upload = handoff.Upload(request_id)
        try:
            if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                params.update(await _from_form(scope, body, upload))
            elif content_type == "application/json":
                params.update(_from_json(await body.read_all(), upload))
            elif content_type.startswith("image/") or content_type == "application/octet-stream":
                async for chunk in body:
                    upload.write(chunk)
            elif content_type == "" and not await body.read_all():
                raise RequestRejected(
                    400,
                    "the request holds no image: send it as multipart field 'image', "
                    'a raw image/* body, or JSON {"image": "<base64>"}',
                )
            else:
                raise RequestRejected(
                    415,
                    f"unsupported content type {content_type or '(none)'}: send "
                    "multipart/form-data, image/*, or application/json",
                )
            if upload.size == 0:
                raise RequestRejected(400, "the request holds no image data (empty body or empty 'image' field)")
            try:
                parsed = parse_params(params)
            except ParamError as exc:
                raise RequestRejected(400, str(exc)) from None
            upload.commit()
        except BaseException:
            upload.discard()
            raise
        return parsed.to_dict()

    async def _await_worker(
        self, scope: Scope, inner_receive: Receive, receive: Receive, send: Send, request_id: str, slot: Slot
    ) -> None:
        """Run LitServe's route; answer early if the client leaves, the worker dies or the deadline passes."""
        state = {"ours": False, "started": False}

        async def app_send(message: dict[str, Any]) -> None:
            if state["ours"]:
                return  # we already answered this request; LitServe's late answer goes nowhere
            state["started"] = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, inner_receive, app_send))
        client: asyncio.Future[None] | None = asyncio.ensure_future(_disconnected(receive))
        deadline = time.monotonic() + self.settings.request_timeout
        try:
            while True:
                waiting = {app} | ({client} if client is not None else set())
                done, _ = await asyncio.wait(waiting, timeout=WATCH_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                if app in done:
                    app.result()
                    return
                if client is not None and client in done:
                    # Nobody will read the answer: a worker that has not taken the request skips it, so
                    # its admission slot is free now (LitServe's answer, a quick 499, goes nowhere).
                    if handoff.cancel(request_id):
                        slot.release()
                    log("client disconnected: request cancelled", severity="WARNING", request=request_id)
                    client = None
                    continue
                if state["started"]:
                    continue  # LitServe is sending the answer
                pid = handoff.held_by_dead_worker(request_id)
                if pid is not None:
                    error = RequestRejected(
                        503,
                        "the inference worker stopped while running this request; it is being replaced: retry",
                        headers={"Retry-After": "5"},
                    )
                elif time.monotonic() > deadline:
                    handoff.cancel(request_id)
                    error = RequestRejected(504, f"no answer within {self.settings.request_timeout:g} s")
                else:
                    continue
                state["ours"] = True
                app.cancel()
                await error.response()(scope, inner_receive, send)
                return
        finally:
            if client is not None:
                client.cancel()


class Slot:
    """One admitted request's place under the admission limit, given back exactly once."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.admitted = time.perf_counter()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.leave(time.perf_counter() - self.admitted)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (uvicorn's receive blocks until then once the body is read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class BodyReader:
    """The request body, chunk by chunk, within a size limit and a deadline for the whole read."""

    def __init__(self, receive: Receive, limit: int, timeout: float):
        self.receive, self.limit, self.timeout = receive, limit, timeout
        self.deadline = time.monotonic() + timeout
        self.size = 0
        self.done = False

    async def next_message(self) -> Message:
        """An ASGI receive() that enforces the limits; what Starlette's form parser reads."""
        if self.done:
            return {"type": "http.request", "body": b"", "more_body": False}
        try:
            message = await asyncio.wait_for(self.receive(), timeout=max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            raise RequestRejected(408, f"the request body did not arrive within {self.timeout:g} s") from None
        if message["type"] == "http.disconnect":
            raise RequestRejected(400, "the client closed the connection before sending the whole body")
        self.size += len(message.get("body", b""))
        if self.size > self.limit:
            raise RequestRejected(413, f"request body is over the limit of {self.limit} bytes")
        self.done = not message.get("more_body", False)
        return message

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.done:
            raise StopAsyncIteration
        return (await self.next_message()).get("body", b"")

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])


async def _from_form(scope: Scope, body: BodyReader, upload: handoff.Upload) -> dict[str, Any]:
    """Copy the form's one ``image`` part into ``upload``; the other fields are parameters."""
    request = Request(scope, body.next_message)
    try:
        form = await request.form(max_files=2)  # two, so that a second image part gets our message below
    except RequestRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - multipart parser errors have several types
        raise RequestRejected(400, f"malformed form body: {exc}") from None
    try:
        images = form.getlist("image")
        if len(images) > 1:
            raise RequestRejected(400, f"the form holds {len(images)} 'image' parts; send one image per request")
        params = {}
        for key, value in form.multi_items():
            if key == "image":
                if isinstance(value, UploadFile):
                    while chunk := await value.read(COPY_CHUNK):
                        upload.write(chunk)
                else:
                    upload.write(value.encode("utf-8"))
            elif isinstance(value, UploadFile):
                raise RequestRejected(400, f"unexpected file field {key!r}; send the image as field 'image'")
            else:
                params[key] = value
        return params
    finally:
        await form.close()


def _from_json(raw: bytes, upload: handoff.Upload) -> dict[str, Any]:
    """Decode the JSON body's base64 ``image`` into ``upload``; the other fields are parameters."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: bad JSON, or an integer past Python's digit limit
        raise RequestRejected(400, f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise RequestRejected(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise RequestRejected(400, "JSON body must be an object with a base64 string field 'image'")
    encoded = data.pop("image").strip()
    encoded = _WHITESPACE.sub("", _DATA_URL.sub("", encoded, count=1))  # data URLs; base64 wrapped in lines
    try:
        upload.write(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise RequestRejected(400, "JSON field 'image' is not valid base64") from None
    return data


def _with_json_body(scope: Scope, body: bytes) -> tuple[Scope, Receive]:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return {**scope, "headers": headers}, receive


# -- routes served by the HTTP process ---------------------------------------


async def warmup(request: Request) -> Response:
    """Answered at once; a web page calls it on load to wake a scaled-to-zero service."""
    states = run_state.worker_states()
    if not states:
        return JSONResponse({"status": "starting"}, status_code=503)
    state = states[0]
    return JSONResponse(
        {
            "status": "warm",
            "backend": state["backend"],
            "device": state["device"],
            "mode": state["mode"],
            "startup_seconds": state["startup_seconds"],
            "workers_ready": len(states),
        }
    )


async def prometheus(request: Request) -> Response:
    body, content_type = render()
    return Response(content=body, media_type=content_type)
