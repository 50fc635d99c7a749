"""``POST /v1.0/removebg`` driven by remove.bg's own client libraries, unmodified, against a real server.

- PyPI ``removebg`` 0.04: its endpoint is the module constant ``API_ENDPOINT``, pointed at our
  server (the way that library allows); it sends multipart (file) and urlencoded (base64, URL) forms.
- npm ``remove.bg`` 1.3.0: its endpoint is fixed to https://api.remove.bg, so its driver
  (tests/clients/removebg-node/drive.js) routes Node's HTTPS connections for that name to a loopback
  TLS terminator in front of our server, with a certificate from a test CA that Node is told to
  trust (NODE_EXTRA_CA_CERTS); it sends JSON (base64, URL) and multipart (file) bodies and asks for
  remove.bg's JSON answer.

Each answer is checked for pixels, sizes and headers against our own route on the same image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import API, REPO, ScriptedServer, http_answer, make_certificates, photo_bytes, start_server

NODE_CLIENT = REPO / "tests" / "clients" / "removebg-node"
KEY = "removebg-test-key"
PHOTO = photo_bytes(size=(1000, 750))  # 0.75 MP: size=preview scales it to 0.25 MP


@pytest.fixture(scope="module")
def image_host():
    """Serves PHOTO at /cat.jpg on loopback (reached as "localhost", a listed host)."""
    server = ScriptedServer(
        lambda conn, head: conn.sendall(http_answer("200 OK", PHOTO, {"Content-Type": "image/jpeg"}))
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(toy_bundle):
    env = {
        "LIT_SERVER_API_KEY": KEY,
        "INSPYRENET_REMOVEBG_URL_HOSTS": "localhost",
        "INSPYRENET_REMOVEBG_URL_ALLOW_PRIVATE": "1",  # the image host is on loopback
    }
    process = start_server(toy_bundle, env=env, block_torch=True)
    yield process
    process.stop()


def ours(server, data: bytes, **params) -> bytes:
    """The same image through our own route."""
    response = httpx.post(
        server.url + API, content=data, headers={"Content-Type": "image/png", "X-API-Key": KEY}, params=params
    )
    assert response.status_code == 200, response.text
    return response.content


def png_of(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def preview_of(data: bytes) -> Image.Image:
    """What size=preview does to the image before the cutout (serving/imaging/removebg.py)."""
    from serving.imaging.contract import decode_image
    from serving.imaging.removebg import fit_megapixels

    return fit_megapixels(decode_image(data), 0.25)


# -- PyPI: removebg ---------------------------------------------------------------------------------


@pytest.fixture
def pypi_client(server, monkeypatch, tmp_path):
    import removebg.removebg

    monkeypatch.setattr(removebg.removebg, "API_ENDPOINT", server.url + "/v1.0/removebg")
    return removebg.RemoveBg(KEY, str(tmp_path / "errors.log"))


def test_pypi_client_file_upload_gives_our_routes_cutout_at_preview_size(server, pypi_client, tmp_path):
    source = tmp_path / "cat.jpg"
    source.write_bytes(PHOTO)
    pypi_client.remove_background_from_img_file(str(source))  # size="regular": the 0.25 MP preview
    result = (tmp_path / "cat.jpg_no_bg.png").read_bytes()
    preview = preview_of(PHOTO)
    assert Image.open(io.BytesIO(result)).size == preview.size == (577, 433)
    assert result == ours(server, png_of(preview))  # byte-identical to our route on the same pixels


def test_pypi_client_base64_with_a_background_colour(server, pypi_client, tmp_path):
    encoded = base64.b64encode(PHOTO).decode()
    out = tmp_path / "b64.jpg"
    pypi_client.remove_background_from_base64_img(encoded, size="full", new_file_name=str(out), bg_color="81d4fa")
    result = Image.open(out)
    assert result.format == "JPEG"
    assert result.size == (1000, 750)  # opaque colour: format=auto gives JPEG
    mask = np.asarray(Image.open(io.BytesIO(ours(server, PHOTO, output="mask"))))
    pixels = np.asarray(result).astype(int)
    background = pixels[mask == 0]
    assert background.size
    assert np.abs(background - (0x81, 0xD4, 0xFA)).max() <= 12  # JPEG's error, no more


def test_pypi_client_image_url(server, pypi_client, image_host, tmp_path):
    out = tmp_path / "url.png"
    pypi_client.remove_background_from_img_url(
        f"http://localhost:{image_host.port}/cat.jpg", size="hd", new_file_name=str(out)
    )
    assert Image.open(out).size == (1000, 750)  # hd: up to 4 MP
    assert out.read_bytes() == ours(server, PHOTO, format="png")


def test_pypi_client_with_a_wrong_key_gets_403(server, monkeypatch, tmp_path):
    import removebg.removebg
    import requests

    monkeypatch.setattr(removebg.removebg, "API_ENDPOINT", server.url + "/v1.0/removebg")
    source = tmp_path / "cat.jpg"
    source.write_bytes(PHOTO)
    with pytest.raises(requests.HTTPError, match="403"):
        removebg.RemoveBg("wrong", str(tmp_path / "e.log")).remove_background_from_img_file(str(source))


# -- npm: remove.bg ---------------------------------------------------------------------------------


def _relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class TlsTerminator(ScriptedServer):
    """TLS for api.remove.bg ends here; the plain HTTP goes on to our server."""

    def __init__(self, target_port: int, context: ssl.SSLContext):
        self.target_port, self.context = target_port, context
        super().__init__(None)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with (
                self.context.wrap_socket(conn, server_side=True) as tls,
                socket.create_connection(("127.0.0.1", self.target_port)) as upstream,
            ):
                back = threading.Thread(target=_relay, args=(upstream, tls), daemon=True)
                back.start()
                _relay(tls, upstream)
                back.join(timeout=120)
        except OSError:
            conn.close()


@pytest.fixture(scope="module")
def node_client(server, tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("node is not installed: scripts/install-test-clients.sh installs it with Debian's nodejs")
    if not (NODE_CLIENT / "node_modules" / "remove.bg").is_dir():
        pytest.skip("remove.bg's npm client is not installed: run scripts/install-test-clients.sh")
    folder = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_certificates(folder, "api.remove.bg")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    terminator = TlsTerminator(server.port, context)
    env = {**os.environ, "REMOVEBG_TLS_PORT": str(terminator.port), "NODE_EXTRA_CA_CERTS": str(ca)}

    def call(function: str, **options):
        command = ["node", "drive.js", json.dumps({"call": function, "options": {"apiKey": KEY, **options}})]
        done = subprocess.run(command, cwd=NODE_CLIENT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    yield call
    terminator.close()


def test_npm_client_file_upload_with_crop(server, node_client, tmp_path):
    source = tmp_path / "cat.jpg"
    source.write_bytes(PHOTO)
    out = tmp_path / "cut.png"
    answer = node_client("removeBackgroundFromImageFile", path=str(source), size="full", outputFile=str(out))
    result = answer["resolved"]
    assert result["creditsCharged"] == "0"
    assert result["detectedType"] == "other"
    assert (result["resultWidth"], result["resultHeight"]) == ("1000", "750")
    assert out.read_bytes() == base64.b64decode(result["base64img"]) == ours(server, PHOTO)

    cropped = node_client("removeBackgroundFromImageFile", path=str(source), size="full", crop=True, type="person")
    assert cropped["resolved"]["detectedType"] == "person"
    img = Image.open(io.BytesIO(base64.b64decode(cropped["resolved"]["base64img"])))
    alpha = np.asarray(img)[..., 3]
    assert img.size == (int(cropped["resolved"]["resultWidth"]), int(cropped["resolved"]["resultHeight"]))
    for edge in (alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]):
        assert edge.max() > 0  # cut to the subject: every edge touches it


def test_npm_client_base64_json_body_and_json_answer(server, node_client):
    answer = node_client(
        "removeBackgroundFromImageBase64", base64img=base64.b64encode(PHOTO).decode(), size="preview", channels="alpha"
    )
    result = answer["resolved"]
    matte = Image.open(io.BytesIO(base64.b64decode(result["base64img"])))
    preview = preview_of(PHOTO)
    assert matte.mode == "L"
    assert matte.size == preview.size
    expected = Image.open(io.BytesIO(ours(server, png_of(preview), output="mask")))
    assert np.abs(np.asarray(matte).astype(int) - np.asarray(expected).astype(int)).max() <= 16  # format=auto: JPEG


def test_npm_client_image_url_and_errors_in_remove_bgs_shape(server, node_client, image_host):
    url = f"http://localhost:{image_host.port}/cat.jpg"
    result = node_client("removeBackgroundFromImageUrl", url=url, size="full", bg_color="green")["resolved"]
    assert (result["resultWidth"], result["resultHeight"]) == ("1000", "750")
    assert Image.open(io.BytesIO(base64.b64decode(result["base64img"]))).format == "JPEG"

    refused = node_client("removeBackgroundFromImageUrl", url=f"http://127.0.0.1:{image_host.port}/cat.jpg")
    (error,) = refused["rejected"]
    assert error["code"] == "url_refused"
    assert "not on this server's list" in error["detail"]
    bad = node_client("removeBackgroundFromImageUrl", url=url, size="gigantic")["rejected"]
    assert bad[0]["code"] == "invalid_parameters"
    assert "'size' must be one of" in bad[0]["detail"]


def test_bg_image_url_scale_and_position_through_the_server(server, image_host):
    """The cases the clients above do not send, on the same server (its image host is allowed)."""
    headers = {"X-Api-Key": KEY}
    url = f"http://localhost:{image_host.port}/cat.jpg"
    backdrop = httpx.post(
        server.url + "/v1.0/removebg",
        files={"image_file": ("a", photo_bytes(size=(200, 150)))},
        data={"bg_image_url": url, "size": "full", "format": "png"},
        headers=headers,
        timeout=60,
    )
    assert backdrop.status_code == 200, backdrop.text
    assert Image.open(io.BytesIO(backdrop.content)).size == (200, 150)
    assert (np.asarray(Image.open(io.BytesIO(backdrop.content)))[..., 3] == 255).all()  # opaque: the photo behind
    small = httpx.post(
        server.url + "/v1.0/removebg",
        json={"image_url": url, "size": "full", "scale": "50%", "position": "0% 100%", "format": "png"},
        headers={**headers, "Accept": "application/json"},
        timeout=60,
    )
    data = small.json()["data"]
    assert (data["foreground_left"], data["foreground_top"] + data["foreground_height"]) == (0, 750)  # bottom left
    assert data["foreground_height"] <= 375 + 1
    assert data["foreground_width"] <= 500 + 1  # half the canvas
