"""Fetch a client's ``image_url`` without letting the client reach what the server can reach.

Only hosts on an allow-list (``INSPYRENET_REMOVEBG_URL_HOSTS``: names, ``*.suffix``
or ``*``), over http or https, without credentials in the URL. The name is
resolved here and every address it resolves to must be public (no private,
loopback, link-local, shared, multicast or reserved address, IPv4-mapped ones
included); the connection then goes to the address that was checked, so a
second DNS answer cannot move it (DNS rebinding), while TLS still verifies
the certificate for the name. Redirects are followed only to the same host
(each hop checked again), at most ``MAX_REDIRECTS``. The body is read within
a byte limit. One deadline covers the whole fetch, whatever the peer's pace:
a watchdog thread shuts the connection's socket down when it passes (or when
the caller cancels: its client left), which ends a blocked connect, TLS
handshake, status line, header or body read at once. (A read timeout alone
restarts with every byte: a header dripped a byte every 200 ms held a fetch
for 13 s with a 3 s limit.) Name resolution is the one step it cannot cut:
the system resolver's own timeouts bound it.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from serving.errors import UserError

MAX_REDIRECTS = 3
READ_BYTES = 256 * 1024
USER_AGENT = "inspyrenet-engines (image_url fetch)"


class UrlRefusedError(UserError):
    """The URL is not fetched, or its fetch failed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UrlPolicy:
    hosts: tuple[str, ...]
    max_bytes: int
    timeout: float
    allow_private: bool = False  # for a private network's own image hosts; never the default


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in (p.lower().rstrip(".") for p in patterns):
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to; refused when any address the name has is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefusedError(f"cannot resolve the host {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UrlRefusedError(f"the host {host!r} has no address")
    if not allow_private:
        private = [a for a in addresses if not _public(a)]
        if private:
            raise UrlRefusedError(f"the host {host!r} resolves to a non-public address ({private[0]}): refused")
    return addresses[0]


class Watchdog:
    """Shuts the fetch's socket down when the deadline passes or ``cancel`` is set; ``fired`` says which."""

    POLL_SECONDS = 0.05

    def __init__(self, deadline: float, cancel: threading.Event | None):
        self.deadline = deadline
        self.cancel = cancel or threading.Event()
        self.finished = threading.Event()
        self.fired: str | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="url-fetch-watchdog", daemon=True).start()

    def _run(self) -> None:
        while not self.finished.is_set():
            if self.cancel.is_set() or time.monotonic() >= self.deadline:
                with self._lock:
                    self.fired = "cancelled" if self.cancel.is_set() else "deadline"
                    _shut(self._sock)
                return
            self.finished.wait(min(self.POLL_SECONDS, max(0.0, self.deadline - time.monotonic())))

    def watch(self, sock: socket.socket) -> None:
        """The socket the fetch now reads from; shut at once if the watchdog has fired already."""
        with self._lock:
            self._sock = sock
            if self.fired is not None:
                _shut(sock)

    def stop(self) -> None:
        self.finished.set()


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, watchdog: Watchdog):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.watchdog = watchdog

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.watchdog.watch(self.sock)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext, watchdog: Watchdog):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context
        self.watchdog = watchdog

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.watchdog.watch(raw)  # the handshake too runs under the deadline
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def _check_url(url: str, policy: UrlPolicy) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an allowed URL."""
    if len(url) > 2048:
        raise UrlRefusedError("the URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefusedError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefusedError(f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'!r}")
    if parts.username is not None or parts.password is not None:
        raise UrlRefusedError("URLs with credentials are not fetched")
    host = parts.hostname or ""
    if not host:
        raise UrlRefusedError("the URL has no host")
    if not host_allowed(host, policy.hosts):
        raise UrlRefusedError(f"the host {host!r} is not on this server's list (INSPYRENET_REMOVEBG_URL_HOSTS)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def fetch(
    url: str,
    policy: UrlPolicy,
    write: Callable[[bytes], None],
    tls: ssl.SSLContext | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Fetch ``url`` into ``write``, chunk by chunk; the number of bytes. Raises UrlRefusedError.

    ``tls``: the context https connections verify with (default: the system's CAs). ``cancel``: set
    it to end the fetch now (status 499: nobody waits for it).
    """
    tls = tls or ssl.create_default_context()
    deadline = time.monotonic() + policy.timeout
    watchdog = Watchdog(deadline, cancel)
    try:
        return _follow(url, policy, write, tls, deadline, watchdog)
    finally:
        watchdog.stop()


def _follow(
    url: str,
    policy: UrlPolicy,
    write: Callable[[bytes], None],
    tls: ssl.SSLContext,
    deadline: float,
    watchdog: Watchdog,
) -> int:
    first_host = None
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, path = _check_url(url, policy)
        if first_host is not None and host.lower() != first_host:
            raise UrlRefusedError(f"the URL redirects to another host ({host!r}): refused")
        first_host = host.lower()
        try:
            location = _get(scheme, host, port, path, policy, deadline, write, tls, watchdog)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(exc, host, policy, watchdog) from None
        if isinstance(location, int):
            return location
        url = urljoin(url, location)
    raise UrlRefusedError(f"the URL redirects more than {MAX_REDIRECTS} times")


def _failure(exc: Exception, host: str, policy: UrlPolicy, watchdog: Watchdog) -> UrlRefusedError:
    """One line for a failed GET: the watchdog's reason first (its shutdown surfaces as any error)."""
    if watchdog.fired == "cancelled":
        return UrlRefusedError("the image URL's fetch was cancelled: the client left", 499)
    if watchdog.fired == "deadline" or isinstance(exc, TimeoutError):
        return UrlRefusedError(f"the image URL did not deliver the image within {policy.timeout:g} s")
    if isinstance(exc, ssl.SSLError):
        return UrlRefusedError(f"TLS with {host!r} failed: {exc.reason or exc}")
    return UrlRefusedError(f"cannot fetch the image URL: {type(exc).__name__}: {exc}"[:300])


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _get(
    scheme: str,
    host: str,
    port: int,
    path: str,
    policy: UrlPolicy,
    deadline: float,
    write: Callable[[bytes], None],
    tls: ssl.SSLContext,
    watchdog: Watchdog,
) -> int | str:
    """One GET: the byte count, or the Location of a redirect."""
    address = resolve(host, port, policy.allow_private)
    timeout = _remaining(deadline)
    if scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(host, port, address, timeout, tls, watchdog)
    else:
        connection = _PinnedHTTPConnection(host, port, address, timeout, watchdog)
    try:
        connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        response = connection.getresponse()
        if watchdog.fired is not None:
            raise TimeoutError
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            if not location:
                raise UrlRefusedError(f"the image URL answered HTTP {response.status} without a Location")
            return location
        if response.status != 200:
            raise UrlRefusedError(f"the image URL answered HTTP {response.status} {response.reason}"[:200])
        return _read_body(connection, response, policy, deadline, write, watchdog)
    finally:
        connection.close()


def _read_body(
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    policy: UrlPolicy,
    deadline: float,
    write: Callable[[bytes], None],
    watchdog: Watchdog,
) -> int:
    """The 200 answer's body into ``write`` within the byte limit; the byte count."""
    length = response.getheader("Content-Length", "")
    if length.isdigit() and int(length) > policy.max_bytes:
        raise UrlRefusedError(f"the image at the URL is {length} bytes, over the limit of {policy.max_bytes}", 413)
    size = 0
    while True:
        if connection.sock is not None:
            connection.sock.settimeout(_remaining(deadline))
        chunk = response.read1(READ_BYTES)
        if watchdog.fired is not None:  # its shutdown reads as the end of the body: it is not
            raise TimeoutError
        if not chunk:
            return size
        size += len(chunk)
        if size > policy.max_bytes:
            raise UrlRefusedError(f"the image at the URL is over the limit of {policy.max_bytes} bytes", 413)
        write(chunk)
        _remaining(deadline)
