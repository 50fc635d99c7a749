"""``POST /v1.0/removebg``: remove.bg's API in front of our pipeline (the HTTP process's part).

The request is read as remove.bg documents it: one image source (``image_file``,
``image_file_b64`` or ``image_url``), an optional background (``bg_color``,
``bg_image_file`` or ``bg_image_url``), and options, from a multipart form, a
urlencoded form or JSON. The image goes into the request's hand-off file
like any upload (a background image into a second one), the options are
checked (``removebg_params``), and the worker makes the result
(``serving.imaging.removebg``). Errors have remove.bg's shape:
``{"errors": [{"title", "code", "detail"}]}``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse
from starlette.types import Scope

from serving.http import handoff
from serving.http.bodies import (
    COPY_CHUNK,
    BodyReader,
    RequestRejectedError,
    decode_base64,
    parse_json_object,
    read_form,
)
from serving.http.url_fetch import UrlPolicy, UrlRefusedError, fetch
from serving.params import ParamError
from serving.removebg_params import given, parse_removebg_params
from serving.settings import Settings

REMOVEBG_PATH = "/v1.0/removebg"
FILE_FIELDS = ("image_file", "bg_image_file")

# Our statuses -> remove.bg's (400 for anything wrong with the input), code, title.
_ERRORS = {
    400: (400, "invalid_request", "Invalid request"),
    401: (403, "auth_failed", "Authentication failed"),
    403: (403, "auth_failed", "Authentication failed"),
    408: (400, "body_timeout", "Request body too slow"),
    413: (413, "file_too_large", "File too large"),
    415: (400, "unknown_format", "Unsupported image format"),
    429: (429, "rate_limit_exceeded", "Rate limit exceeded"),
    431: (400, "headers_too_large", "Request headers too large"),
    499: (499, "cancelled", "Request cancelled"),
    503: (503, "service_unavailable", "Service unavailable"),
    504: (504, "timeout", "Processing timed out"),
}


def error_body(status: int, detail: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    """(remove.bg's status, its error body) for one of our statuses."""
    answer, default_code, title = _ERRORS.get(status, (status, "error", "Error"))
    return answer, {"errors": [{"title": title, "code": code or default_code, "detail": detail}]}


def error_response(status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None):
    answer, body = error_body(status, detail, code)
    return JSONResponse(body, status_code=answer, headers=headers)


def render_rejection(exc: RequestRejectedError) -> JSONResponse:
    return error_response(exc.status, exc.detail, getattr(exc, "code", None), exc.headers)


class SourceRejectedError(RequestRejectedError):
    def __init__(self, detail: str, code: str, status: int = 400):
        super().__init__(status, detail)
        self.code = code


class _Uploads:
    """The request's image and its optional background image, as hand-off files."""

    def __init__(self, image_id: str, background_id: str):
        self.image = handoff.Upload(image_id)
        self.background_id = background_id
        self.background: handoff.Upload | None = None

    def background_upload(self) -> handoff.Upload:
        if self.background is None:
            self.background = handoff.Upload(self.background_id)
        return self.background

    def commit(self) -> None:
        if self.background is not None:
            self.background.commit()
        self.image.commit()  # last: a worker may take the request as soon as its image is there

    def discard(self) -> None:
        for upload in (self.image, self.background):
            if upload is not None:
                upload.discard()


async def receive_removebg(
    scope: Scope, body: BodyReader, settings: Settings, image_id: str, background_id: str
) -> dict[str, Any]:
    """Read a remove.bg request into hand-off files; return its checked parameters as a dict."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    uploads = _Uploads(image_id, background_id)
    try:
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields = await _form_fields(scope, body, uploads)
        elif content_type == "application/json":
            fields = parse_json_object(await body.read_all())
        else:
            raise SourceRejectedError(
                f"unsupported content type {content_type or '(none)'}: send multipart/form-data, "
                "application/x-www-form-urlencoded or application/json",
                "unsupported_content_type",
            )
        await _read_image(fields, uploads, settings, body)
        has_background = await _read_background(fields, uploads, settings, body)
        try:
            params = parse_removebg_params(fields, bg_image=background_id if has_background else None)
        except ParamError as exc:
            raise SourceRejectedError(str(exc), "invalid_parameters") from None
        uploads.commit()
    except BaseException:
        uploads.discard()
        raise
    return params.to_dict()


async def _form_fields(scope: Scope, body: BodyReader, uploads: _Uploads) -> dict[str, Any]:
    """The form's text fields; its file parts (image_file, bg_image_file) copied into the hand-off files."""
    form = await read_form(scope, body, max_files=3)
    try:
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key in fields or (key in FILE_FIELDS and uploads_have(uploads, key)):
                raise SourceRejectedError(f"the form holds field {key!r} more than once", "invalid_parameters")
            if isinstance(value, UploadFile):
                if key not in FILE_FIELDS:
                    raise SourceRejectedError(
                        f"unexpected file part {key!r}: files go in image_file or bg_image_file", "invalid_parameters"
                    )
                target = uploads.image if key == "image_file" else uploads.background_upload()
                while chunk := await value.read(COPY_CHUNK):
                    target.write(chunk)
            elif key in FILE_FIELDS and given(value):
                raise SourceRejectedError(f"{key} must be a file part of a multipart form", "invalid_parameters")
            else:
                fields[key] = value
        return fields
    finally:
        await form.close()


def uploads_have(uploads: _Uploads, key: str) -> bool:
    upload = uploads.image if key == "image_file" else uploads.background
    return upload is not None and upload.size > 0


def _image_source(fields: dict[str, Any], uploads: _Uploads) -> str:
    """The one image source given: image_file (already copied), image_file_b64 or image_url."""
    for key in FILE_FIELDS:
        if given(fields.pop(key, None)):
            raise SourceRejectedError(f"{key} must be a file part of a multipart form", "invalid_parameters")
    sources = [name for name in ("image_file_b64", "image_url") if given(fields.get(name))]
    if uploads.image.size > 0:
        sources.insert(0, "image_file")
    if not sources:
        raise SourceRejectedError(
            "no image given: send one of image_file (multipart), image_file_b64 or image_url", "missing_source"
        )
    if len(sources) > 1:
        raise SourceRejectedError(f"give exactly one image source; got {', '.join(sources)}", "multiple_sources")
    return sources[0]


async def _read_image(fields: dict[str, Any], uploads: _Uploads, settings: Settings, body: BodyReader) -> None:
    """Exactly one source: the file part (already copied), base64, or a URL fetched here."""
    source = _image_source(fields, uploads)
    if source == "image_file_b64":
        value = fields["image_file_b64"]
        if not isinstance(value, str):
            raise SourceRejectedError("image_file_b64 must be a base64 string", "invalid_parameters")
        uploads.image.write(decode_base64(value, "image_file_b64"))
    elif source == "image_url":
        await _fetch_into("image_url", fields["image_url"], uploads.image, settings, body)
    if uploads.image.size == 0:
        raise SourceRejectedError("the image is empty", "missing_source")
    for name in ("image_file_b64", "image_url"):
        fields.pop(name, None)


async def _read_background(fields: dict[str, Any], uploads: _Uploads, settings: Settings, body: BodyReader) -> bool:
    """A background image from bg_image_file (copied already) or bg_image_url; True when there is one."""
    has_file = uploads.background is not None and uploads.background.size > 0
    url = fields.pop("bg_image_url", None)
    if given(url):
        if has_file:
            raise SourceRejectedError("give one background: bg_image_url or bg_image_file", "invalid_parameters")
        await _fetch_into("bg_image_url", url, uploads.background_upload(), settings, body)
        return True
    return has_file


async def _fetch_into(field: str, url: Any, upload: handoff.Upload, settings: Settings, body: BodyReader) -> None:
    """Fetch ``url`` into ``upload`` on a thread; a client that disconnects meanwhile cancels the fetch at
    once (its admission slot is given back by the gateway), rather than when the fetch's deadline passes."""
    if not isinstance(url, str):
        raise SourceRejectedError(f"{field} must be a URL string", "invalid_parameters")
    if not settings.removebg_url_hosts:
        raise SourceRejectedError(
            f"{field} is off on this server (INSPYRENET_REMOVEBG_URL_HOSTS lists no host): send the image itself",
            "url_disabled",
        )
    policy = UrlPolicy(
        hosts=settings.removebg_url_hosts,
        max_bytes=settings.max_body_bytes,
        timeout=settings.removebg_url_timeout,
        allow_private=settings.removebg_url_allow_private,
    )
    cancel = threading.Event()
    fetching = asyncio.ensure_future(asyncio.to_thread(fetch, url.strip(), policy, upload.write, cancel=cancel))
    # The body is read by now (a form or JSON is parsed whole); if not, no watcher: it would take its chunks.
    gone = asyncio.ensure_future(body.client_gone()) if body.done else asyncio.get_running_loop().create_future()
    try:
        await asyncio.wait({fetching, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not fetching.done():
            cancel.set()  # the fetch thread's watchdog shuts its connection now
            raise SourceRejectedError(f"{field}: the client left during the fetch", "client_left", 499)
        fetching.result()
    except UrlRefusedError as exc:
        code = "file_too_large" if exc.status == 413 else "url_refused"
        raise SourceRejectedError(f"{field}: {exc}", code, exc.status) from None
    finally:
        gone.cancel()
