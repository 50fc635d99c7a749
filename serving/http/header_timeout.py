"""uvicorn's h11 protocol with a deadline for each request's line and headers.

uvicorn waits for a request's headers forever: its keep-alive timer runs only
between requests and stops at the first byte of the next one, so a client that
sends a byte every few seconds holds a connection, and its buffer, for as long
as it likes. Here a request's line and headers must be complete within
``header_timeout`` seconds of the connection opening (or of the previous
response); otherwise the connection is closed. The body has its own deadline
in the gateway (``INSPYRENET_BODY_TIMEOUT``).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # this request's headers are in; the gateway times its body

    def on_response_complete(self) -> None:
        self._arm()  # for the next request on this connection (a pipelined one disarms it at once)
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class uvicorn instantiates per connection, with this deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
