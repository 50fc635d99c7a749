"""``image_url`` fetches (serving/http/url_fetch.py) against loopback peers that misbehave on purpose.

Every peer here is on 127.0.0.1: the private-address rule refuses them unless the policy opts in
(``allow_private``, INSPYRENET_REMOVEBG_URL_ALLOW_PRIVATE), which the fetches that must get past
the address check use; the address check itself is tested with the default policy.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from serving.http.url_fetch import UrlPolicy, UrlRefusedError, fetch, host_allowed
from tests.harness import ScriptedServer, http_answer, make_certificates, photo_bytes

IMAGE = photo_bytes(size=(64, 48))


def policy(**overrides) -> UrlPolicy:
    values = {"hosts": ("127.0.0.1", "localhost"), "max_bytes": 1_000_000, "timeout": 3.0, "allow_private": True}
    return UrlPolicy(**{**values, **overrides})


def fetched(url: str, **overrides) -> bytes:
    chunks: list[bytes] = []
    fetch(url, policy(**overrides), chunks.append)
    return b"".join(chunks)


def refused(url: str, **overrides) -> UrlRefusedError:
    with pytest.raises(UrlRefusedError) as info:
        fetched(url, **overrides)
    return info.value


@pytest.fixture
def peer():
    servers = []

    def make(handler):
        server = ScriptedServer(handler)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_an_allowed_host_gives_the_image_bytes(peer):
    server = peer(lambda conn, head: conn.sendall(http_answer("200 OK", IMAGE, {"Content-Type": "image/jpeg"})))
    assert fetched(server.url + "/cat.jpg?x=1") == IMAGE
    assert server.requests[0].startswith(b"GET /cat.jpg?x=1 HTTP/1.1")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a.jpg",  # loopback
        "http://localhost:{port}/a.jpg",  # a name that resolves to loopback
        "http://[::1]:{port}/a.jpg",
        "http://2130706433:{port}/a.jpg",  # 127.0.0.1 written as one number
        "http://0x7f.1:{port}/a.jpg",
        "http://[::ffff:127.0.0.1]:{port}/a.jpg",  # IPv4-mapped IPv6
        "http://169.254.169.254/computeMetadata/v1/",  # the metadata server (link-local)
        "http://10.0.0.1:{port}/a.jpg",
        "http://192.168.1.1:{port}/a.jpg",
        "http://100.64.0.1:{port}/a.jpg",  # shared address space
        "http://0.0.0.0:{port}/a.jpg",
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(peer, url):
    server = peer(lambda conn, head: conn.sendall(http_answer("200 OK", IMAGE)))
    url = url.format(port=server.port)
    error = refused(url, hosts=("*",), allow_private=False)
    assert "non-public address" in str(error) or "cannot resolve" in str(error)
    assert server.requests == []  # never connected


def test_hosts_off_the_list_schemes_and_credentials_are_refused():
    assert "not on this server's list" in str(refused("http://example.org/a.jpg"))
    assert "only http and https" in str(refused("file:///etc/passwd", hosts=("*",)))
    assert "only http and https" in str(refused("ftp://127.0.0.1/a.jpg"))
    assert "credentials" in str(refused("http://user:pw@127.0.0.1/a.jpg"))
    assert "no host" in str(refused("http:///a.jpg", hosts=("*",)))
    assert host_allowed("img.example.com", ("*.example.com",))
    assert not host_allowed("example.com.evil.io", ("*.example.com",))
    assert not host_allowed("evilexample.com", ("*.example.com",))


def test_a_redirect_to_another_host_is_refused_and_one_to_the_same_host_followed(peer):
    def handler(conn, head):
        if head.startswith(b"GET /moved"):
            conn.sendall(http_answer("302 Found", headers={"Location": "/cat.jpg"}))
        elif head.startswith(b"GET /away"):
            conn.sendall(http_answer("302 Found", headers={"Location": "http://localhost:1/cat.jpg"}))
        elif head.startswith(b"GET /meta"):
            conn.sendall(http_answer("301 Moved", headers={"Location": "http://169.254.169.254/"}))
        elif head.startswith(b"GET /loop"):
            conn.sendall(http_answer("302 Found", headers={"Location": "/loop"}))
        else:
            conn.sendall(http_answer("200 OK", IMAGE))

    server = peer(handler)
    assert fetched(server.url + "/moved") == IMAGE
    assert "redirects to another host ('localhost')" in str(refused(server.url + "/away"))
    assert "another host" in str(refused(server.url + "/meta", hosts=("*",)))
    assert "redirects more than" in str(refused(server.url + "/loop"))


def test_a_body_over_the_limit_is_refused_by_its_length_or_as_it_arrives(peer):
    def announced(conn, head):
        conn.sendall(http_answer("200 OK", b"x" * 2000))

    def endless(conn, head):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            conn.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")

    error = refused(peer(announced).url, max_bytes=1000)
    assert error.status == 413
    assert "2000 bytes" in str(error)
    start = time.monotonic()
    error = refused(peer(endless).url, max_bytes=100_000)
    assert error.status == 413
    assert time.monotonic() - start < 3


def test_slow_bodies_and_silent_peers_end_at_the_deadline(peer):
    def trickle(conn, head):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while True:
            conn.sendall(b"x")  # a byte every 0.1 s: each read is quick, the whole never ends
            time.sleep(0.1)

    def silent(conn, head):
        time.sleep(30)

    for handler in (trickle, silent):
        start = time.monotonic()
        error = refused(peer(handler).url, timeout=1.5)
        assert "within 1.5 s" in str(error)
        assert time.monotonic() - start < 3


def test_a_header_dripped_a_byte_at_a_time_ends_at_the_deadline(peer):
    """Each byte comes well within the socket's timeout, the header never ends in time: one deadline
    over the status line and the headers too (a per-read timeout alone held this for 13 s at 3 s)."""

    def drip(conn, head):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nabcd":
            conn.sendall(bytes([byte]))
            time.sleep(0.2)

    start = time.monotonic()
    error = refused(peer(drip).url, timeout=1.5)
    assert "within 1.5 s" in str(error)
    assert time.monotonic() - start < 3


def test_a_tls_handshake_sent_slowly_ends_at_the_deadline():
    """A host that answers the ClientHello a byte every 200 ms: the handshake runs under the deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def drip():
        conn, _ = listener.accept()
        with conn:
            try:
                for byte in b"\x16\x03\x03\x40\x00" + b"\x02" * 200:  # a record header, then its slow body
                    conn.sendall(bytes([byte]))
                    time.sleep(0.2)
            except OSError:
                pass

    threading.Thread(target=drip, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(UrlRefusedError, match="within 1.5 s"):
        fetch(f"https://localhost:{listener.getsockname()[1]}/a.jpg", policy(timeout=1.5), [].append)
    assert time.monotonic() - start < 3
    listener.close()


def test_a_cancelled_fetch_ends_at_once(peer):
    """The gateway sets ``cancel`` when the client leaves: the fetch and its connection end then, not at
    the deadline."""
    server = peer(lambda conn, head: time.sleep(30))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(UrlRefusedError) as info:
        fetch(server.url + "/a.jpg", policy(timeout=20), [].append, cancel=cancel)
    assert info.value.status == 499
    assert "cancelled" in str(info.value)
    assert time.monotonic() - start < 2


def test_error_statuses_and_a_closed_port_are_one_line_refusals(peer):
    assert "HTTP 404" in str(refused(peer(lambda c, h: c.sendall(http_answer("404 Not Found"))).url))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "cannot fetch the image URL: ConnectionRefusedError" in str(refused(f"http://127.0.0.1:{port}/a.jpg"))


class TlsImageHost(ScriptedServer):
    """Serves IMAGE over TLS with a certificate for ``name`` from a test CA."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context
        super().__init__(None)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += tls.recv(4096)
                self.requests.append(head)
                tls.sendall(http_answer("200 OK", IMAGE))
        except OSError:
            conn.close()


def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_checked_address(tmp_path):
    hosts = []
    for name in ("localhost", "elsewhere.example"):
        folder = tmp_path / name
        folder.mkdir()
        ca, cert, key = make_certificates(folder, name)
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_side.load_cert_chain(cert, key)
        hosts.append((TlsImageHost(server_side), ssl.create_default_context(cafile=str(ca))))
    (right, trusts_right), (wrong, trusts_wrong) = hosts
    try:
        chunks: list[bytes] = []
        fetch(f"https://localhost:{right.port}/a.jpg", policy(), chunks.append, trusts_right)
        assert b"".join(chunks) == IMAGE
        assert right.requests[0].startswith(b"GET /a.jpg")
        with pytest.raises(UrlRefusedError, match="TLS with 'localhost' failed"):
            fetch(
                f"https://localhost:{wrong.port}/a.jpg", policy(), chunks.append, trusts_wrong
            )  # a cert for another name
        with pytest.raises(UrlRefusedError, match="TLS with 'localhost' failed"):
            fetch(f"https://localhost:{right.port}/a.jpg", policy(), chunks.append)  # the system's CAs: untrusted
    finally:
        right.close()
        wrong.close()
