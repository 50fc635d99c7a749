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

``POST /v1.0/removebg`` takes the same path with remove.bg's reader
(``serving.http.removebg``): its request reaches LitServe's route as
``{"id", "params", "kind": "removebg", "json"}``, and every error the gateway
gives it has remove.bg's shape (429, not 503, at the admission limit).

Errors are 4xx/5xx JSON bodies ``{"detail": "..."}``. It also counts requests
for ``/metrics`` and adds ``X-Total-Ms`` to inference responses.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from serving.http import handoff, run_state
from serving.http.admission import Admission
from serving.http.bodies import (
    COPY_CHUNK,
    BodyReader,
    RequestRejectedError,
    decode_base64,
    parse_json_object,
    read_form,
)
from serving.http.metrics import metrics, render
from serving.http.removebg import REMOVEBG_PATH, receive_removebg, render_rejection
from serving.imaging.contract import RESIZE_RULE, UPSAMPLE_RULE
from serving.logs import log
from serving.params import CUTOUT_PATH, ParamError, parse_params
from serving.settings import Settings

KNOWN_ROUTES = ("/health", "/warmup", "/metrics", "/info")
# Cloud Run's probes, a page's wake-up call and its question for the model's input size send no key.
OPEN_ROUTES = ("/health", "/warmup", "/info")
MASK_FORMATS = ("png", "webp")  # the mask answer's encodings: single-channel PNG, lossless WebP
WATCH_SECONDS = 0.2  # how often a waiting request looks for a dead worker


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
        route = path if path in (self.api_path, REMOVEBG_PATH) or path in KNOWN_ROUTES else "other"
        status_holder = {"status": 500}
        is_inference = path in (self.api_path, REMOVEBG_PATH) and scope["method"] == "POST"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if is_inference:
                    total_ms = (time.perf_counter() - start) * 1000
                    headers = list(message.get("headers", []))
                    headers.append((b"x-total-ms", f"{total_ms:.1f}".encode()))
                    message = {**message, "headers": headers}
            await send(message)

        render = render_rejection if path == REMOVEBG_PATH else RequestRejectedError.response
        try:
            header_bytes = sum(len(key) + len(value) for key, value in scope["headers"])
            if header_bytes > self.settings.max_header_bytes:
                # h11 refuses larger headers only when they arrive over several reads; this is the hard limit.
                rejection = RequestRejectedError(
                    431, f"request headers are {header_bytes} bytes, over the limit of {self.settings.max_header_bytes}"
                )
                await render(rejection)(scope, receive, send_wrapper)
            elif self.settings.api_key is not None and path not in self.open_routes and not self._key_matches(scope):
                await render(RequestRejectedError(401, "missing or wrong X-API-Key header"))(
                    scope, receive, send_wrapper
                )
            elif is_inference:
                await self._inference(scope, receive, send_wrapper, removebg=path == REMOVEBG_PATH)
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

    async def _inference(self, scope: Scope, receive: Receive, send: Send, removebg: bool) -> None:
        render = render_rejection if removebg else RequestRejectedError.response
        if not self.admission.try_enter():
            wait = self.admission.retry_after()
            await render(
                RequestRejectedError(
                    429 if removebg else 503,  # remove.bg's clients wait out a 429
                    f"the server is at its limit of {self.admission.limit} requests in flight; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            )(scope, receive, send)
            return
        slot = Slot(self.admission)
        request_id, background_id = handoff.new_id(), handoff.new_id()
        try:
            try:
                if removebg:
                    body = BodyReader(receive, self.settings.max_body_bytes, self.settings.body_timeout)
                    self._refuse_long_body(scope)
                    params = await receive_removebg(scope, body, self.settings, request_id, background_id)
                    request = {"id": request_id, "params": params, "kind": "removebg", "json": _wants_json(scope)}
                else:
                    request = {"id": request_id, "params": await self._receive_image(scope, receive, request_id)}
            except RequestRejectedError as exc:
                slot.release()  # before the answer: a client may send its next request the moment it has it
                await render(exc)(scope, receive, send)
                return
            inner_scope, inner_receive = _with_json_body(scope, json.dumps(request).encode("utf-8"), self.api_path)
            await self._await_worker(inner_scope, inner_receive, receive, send, request_id, slot, render)
        finally:
            handoff.cancel(request_id)
            handoff.cancel(background_id)
            slot.release()

    def _refuse_long_body(self, scope: Scope) -> None:
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-length"), "")
        limit = self.settings.max_body_bytes
        if length.isascii() and length.isdigit() and int(length) > limit:
            raise RequestRejectedError(413, f"request body is {length} bytes, over the limit of {limit}")

    async def _receive_image(self, scope: Scope, receive: Receive, request_id: str) -> dict[str, Any]:
        """Stream the request's image into its hand-off file; return the checked parameters."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.settings.max_body_bytes
        self._refuse_long_body(scope)
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
                raise RequestRejectedError(
                    400,
                    "the request holds no image: send it as multipart field 'image', "
                    'a raw image/* body, or JSON {"image": "<base64>"}',
                )
            else:
                raise RequestRejectedError(
                    415,
                    f"unsupported content type {content_type or '(none)'}: send "
                    "multipart/form-data, image/*, or application/json",
                )
            if upload.size == 0 and content_type == "application/x-www-form-urlencoded":
                raise RequestRejectedError(
                    400,
                    "the body came as application/x-www-form-urlencoded (curl's default for --data-binary) with no "
                    "'image' field: send the image with its own type (-H 'Content-Type: image/jpeg') or as "
                    "multipart (-F image=@photo.jpg)",
                )
            if upload.size == 0:
                raise RequestRejectedError(400, "the request holds no image data (empty body or empty 'image' field)")
            try:
                parsed = parse_params(params)
            except ParamError as exc:
                raise RequestRejectedError(400, str(exc)) from None
            upload.commit()
        except BaseException:
            upload.discard()
            raise
        return parsed.to_dict()

    def _early_answer(self, request_id: str, deadline: float) -> RequestRejectedError | None:
        """Why to answer now instead of LitServe: its worker died holding the request, or the deadline passed."""
        if handoff.held_by_dead_worker(request_id) is not None:
            return RequestRejectedError(
                503,
                "the inference worker stopped while running this request; it is being replaced: retry",
                headers={"Retry-After": "5"},
            )
        if time.monotonic() > deadline:
            handoff.cancel(request_id)
            return RequestRejectedError(504, f"no answer within {self.settings.request_timeout:g} s")
        return None

    async def _await_worker(
        self,
        scope: Scope,
        inner_receive: Receive,
        receive: Receive,
        send: Send,
        request_id: str,
        slot: Slot,
        render: Callable[[RequestRejectedError], Response],
    ) -> None:
        """Run LitServe's route; answer early if the client leaves, the worker dies or the deadline passes."""
        state = {"ours": False, "started": False}

        async def app_send(message: dict[str, Any]) -> None:
            if state["ours"]:
                return  # we already answered this request; LitServe's late answer goes nowhere
            state["started"] = True
            if message["type"] == "http.response.start":
                slot.release()  # the worker is done with it: free before the client can read the answer
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
                    _client_left(request_id, slot)
                    client = None
                    continue
                if state["started"]:
                    continue  # LitServe is sending the answer
                error = self._early_answer(request_id, deadline)
                if error is None:
                    continue
                state["ours"] = True
                app.cancel()
                slot.release()
                await render(error)(scope, inner_receive, send)
                return
        finally:
            if client is not None:
                client.cancel()


def _client_left(request_id: str, slot: Slot) -> None:
    """Nobody will read the answer: a worker that has not taken the request skips it, so its admission
    slot is free now (LitServe's answer, a quick 499, goes nowhere)."""
    if handoff.cancel(request_id):
        slot.release()
    log("client disconnected: request cancelled", severity="WARNING", request=request_id)


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


async def _from_form(scope: Scope, body: BodyReader, upload: handoff.Upload) -> dict[str, Any]:
    """Copy the form's one ``image`` part into ``upload``; the other fields are parameters."""
    form = await read_form(scope, body, max_files=2)  # two, so that a second image part gets our message below
    try:
        images = form.getlist("image")
        if len(images) > 1:
            raise RequestRejectedError(400, f"the form holds {len(images)} 'image' parts; send one image per request")
        params = {}
        for key, value in form.multi_items():
            if key == "image":
                if isinstance(value, UploadFile):
                    while chunk := await value.read(COPY_CHUNK):
                        upload.write(chunk)
                else:
                    upload.write(value.encode("utf-8"))
            elif isinstance(value, UploadFile):
                raise RequestRejectedError(400, f"unexpected file field {key!r}; send the image as field 'image'")
            else:
                params[key] = value
        return params
    finally:
        await form.close()


def _from_json(raw: bytes, upload: handoff.Upload) -> dict[str, Any]:
    """Decode the JSON body's base64 ``image`` into ``upload``; the other fields are parameters."""
    data = parse_json_object(raw)
    if not isinstance(data.get("image"), str):
        raise RequestRejectedError(400, "JSON body must be an object with a base64 string field 'image'")
    upload.write(decode_base64(data.pop("image"), "image"))
    return data


def _wants_json(scope: Scope) -> bool:
    accept = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"accept"), "")
    return "application/json" in accept.lower()


def _with_json_body(scope: Scope, body: bytes, path: str) -> tuple[Scope, Receive]:
    """The scope and body LitServe's route receives: ``{"id": ..., "params": ...}`` at ``path``."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return {**scope, "path": path, "raw_path": path.encode(), "headers": headers}, receive


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


def model_description(mode: str, input_size: tuple[int, int]) -> dict[str, Any]:
    """What ``GET /info`` answers: the model's input size and the mask answer the mobile path asks for.

    A client that sends the photo at exactly this size (resized as the rule says) gets back
    ``output=mask`` at that same size, with no resize on the server: the browser composes the
    full-size cutout from the photo it already has (clients/web).
    """
    height, width = input_size
    return {
        "mode": mode,
        "input": {"width": width, "height": height, "resize": RESIZE_RULE},
        "mask": {
            "route": CUTOUT_PATH,
            "params": {"output": "mask"},
            "formats": list(MASK_FORMATS),
            "upsample": UPSAMPLE_RULE,
        },
    }


def info_route(description: dict[str, Any]) -> Callable[[Request], Any]:
    """``GET /info``: open like /health (a page asks before it has a photo); the worker's backend once one is warm."""

    async def info(request: Request) -> Response:
        states = run_state.worker_states()
        served = {"backend": states[0]["backend"], "device": states[0]["device"]} if states else {}
        return JSONResponse({**description, **served})

    return info


async def prometheus(request: Request) -> Response:
    body, content_type = render()
    return Response(content=body, media_type=content_type)
