"""Reading request bodies in the HTTP process: limits, JSON, base64 and forms, with 4xx errors.

Shared by the gateway's two inference routes (ours and the remove.bg-compatible
one). Every failure a client can cause is a ``RequestRejectedError`` with its status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope

COPY_CHUNK = 1024 * 1024
# data:[<media type>][;<parameter>=<value>]*;base64,<data>  (RFC 2397)
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


class RequestRejectedError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=self.headers)


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
            raise RequestRejectedError(408, f"the request body did not arrive within {self.timeout:g} s") from None
        if message["type"] == "http.disconnect":
            raise RequestRejectedError(400, "the client closed the connection before sending the whole body")
        self.size += len(message.get("body", b""))
        if self.size > self.limit:
            raise RequestRejectedError(413, f"request body is over the limit of {self.limit} bytes")
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

    async def client_gone(self) -> None:
        """Returns when the client disconnects; only once the whole body is read (until then receive()
        gives body chunks, which this would take)."""
        if not self.done:
            raise RuntimeError("client_gone() before the body was read")
        while (await self.receive())["type"] != "http.disconnect":
            pass


async def read_form(scope: Scope, body: BodyReader, max_files: int) -> FormData:
    """The multipart or urlencoded form, parsed within the body's limits; the caller closes it."""
    request = Request(scope, body.next_message)
    try:
        return await request.form(max_files=max_files)
    except RequestRejectedError:
        raise
    except Exception as exc:  # noqa: BLE001 - multipart parser errors have several types
        raise RequestRejectedError(400, f"malformed form body: {exc}") from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: bad JSON, or an integer past Python's digit limit
        raise RequestRejectedError(400, f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise RequestRejectedError(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestRejectedError(400, "the JSON body must be an object")
    return data


def decode_base64(text: str, field: str) -> bytes:
    """Standard base64, also wrapped in lines or as a data URL."""
    encoded = _WHITESPACE.sub("", _DATA_URL.sub("", text.strip(), count=1))
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestRejectedError(400, f"field '{field}' is not valid base64") from None
