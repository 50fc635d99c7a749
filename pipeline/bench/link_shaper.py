"""A mobile link on loopback: a TCP proxy that paces each direction and delays every byte.

Browsers' own throttling (DevTools network conditions) delays responses inside the browser: the
server never sees a slow client. This proxy sits between the browser and the server, so the
server reads a request body at the link's upload rate and its answer leaves at the download rate:

- each direction is one link shared by every connection (a phone has one radio): a segment of at
  most ``SEGMENT`` bytes takes ``bytes * 8 / rate`` seconds of that direction's time, in order;
- every segment then arrives half a round trip later (propagation);
- a new connection's first bytes leave one round trip after it opened (TCP's handshake);
- at most ``WINDOW`` bytes wait in each direction of a connection before the proxy stops reading
  (the sender then waits, as it would for the link).

It counts the bytes each way, so a benchmark reports what crossed the link, headers and CORS
preflights included. No loss, no jitter: the figures are the link's floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

SEGMENT = 16 * 1024
WINDOW = 256 * 1024


@dataclass(frozen=True)
class Link:
    name: str
    down_bits_per_s: float | None  # server -> client; None: not paced
    up_bits_per_s: float | None  # client -> server
    rtt_s: float

    def describe(self) -> str:
        if self.down_bits_per_s is None or self.up_bits_per_s is None:
            return f"{self.name} (unshaped)"
        return (
            f"{self.name}: {self.down_bits_per_s / 1e6:g} Mbit/s down, {self.up_bits_per_s / 1e6:g} Mbit/s up, "
            f"{self.rtt_s * 1000:g} ms RTT"
        )


# The profiles of the measurements this project compares against (docs/performance.md).
LINKS = {
    "loopback": Link("loopback", None, None, 0.0),
    "4g": Link("4G", 9e6, 1.5e6, 0.170),
    "slow-4g": Link("slow 4G", 1.6e6, 0.75e6, 0.150),
}


class _Direction:
    """One direction of the link: its time is shared by every connection, in the order segments come."""

    def __init__(self, bits_per_s: float | None):
        self.bits_per_s = bits_per_s
        self.free_at = 0.0
        self.bytes = 0

    def slot(self, size: int, earliest: float) -> float:
        """When a segment of ``size`` bytes, ready at ``earliest``, has left the sender."""
        self.bytes += size
        if self.bits_per_s is None:
            return earliest
        start = max(earliest, self.free_at)
        self.free_at = start + size * 8 / self.bits_per_s
        return self.free_at


class LinkShaper:
    """The proxy, on its own event loop in a thread: ``start()`` returns the port to connect to."""

    def __init__(self, upstream_port: int, link: Link, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.link = link
        self.up = _Direction(link.up_bits_per_s)
        self.down = _Direction(link.down_bits_per_s)
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bytes_up(self) -> int:
        return self.up.bytes

    @property
    def bytes_down(self) -> int:
        return self.down.bytes

    def reset_counters(self) -> None:
        self.up.bytes = self.down.bytes = 0
        self.connections = 0

    def start(self) -> int:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"link-shaper-{self.link.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        opened = time.monotonic()
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        handshake = opened + self.link.rtt_s  # the client's first bytes leave after SYN, SYN-ACK
        pumps = [
            asyncio.ensure_future(self._pump(client_reader, server_writer, self.up, handshake)),
            asyncio.ensure_future(self._pump(server_reader, client_writer, self.down, opened)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.ALL_COMPLETED)
        for writer in (server_writer, client_writer):
            with contextlib.suppress(Exception):
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: _Direction, earliest: float
    ) -> None:
        """Read as the sender sends, deliver each segment when the link says it arrives, in order."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        waiting = {"bytes": 0}
        drained = asyncio.Event()
        drained.set()
        half_rtt = self.link.rtt_s / 2

        async def deliver() -> None:
            try:
                while (item := await queue.get()) is not None:
                    arrives, data = item
                    delay = arrives - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
                    waiting["bytes"] -= len(data)
                    if waiting["bytes"] <= WINDOW:
                        drained.set()
                writer.write_eof()
            finally:
                drained.set()  # the receiver is gone: the sender must not wait for it

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(SEGMENT):
                sent = direction.slot(len(data), max(time.monotonic(), earliest))
                waiting["bytes"] += len(data)
                queue.put_nowait((sent + half_rtt, data))
                if waiting["bytes"] > WINDOW:
                    drained.clear()
                    await drained.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await delivering
