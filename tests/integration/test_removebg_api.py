"""``POST /v1.0/removebg`` on a real server (the toy bundle): every body, parameter and error.

remove.bg's own clients drive it in test_removebg_clients.py; here, the cases they never send.
"""

from __future__ import annotations

import base64
import io
import socket
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import API, ScriptedServer, http_answer, photo_bytes, start_server

ROUTE = "/v1.0/removebg"
PHOTO = photo_bytes(size=(451, 300))


def half_black() -> bytes:
    """The photo with its left half black: the toy model's mask is 0 there."""
    img = Image.open(io.BytesIO(PHOTO)).convert("RGB")
    pixels = np.asarray(img).copy()
    pixels[:, : pixels.shape[1] // 2] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_host():
    def handler(conn, head):
        if head.startswith(b"GET /to-metadata"):
            conn.sendall(http_answer("302 Found", headers={"Location": "http://169.254.169.254/latest/"}))
        else:
            conn.sendall(http_answer("200 OK", PHOTO, {"Content-Type": "image/jpeg"}))

    server = ScriptedServer(handler)
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(toy_bundle):
    """No API key, image_url on for any public host: loopback hosts must be refused."""
    env = {
        "INSPYRENET_REMOVEBG_URL_HOSTS": "*",
        # Two: a client's next request can arrive before the slot of its last answer is given back.
        "INSPYRENET_MAX_IN_FLIGHT": "2",
        "INSPYRENET_MAX_BODY_BYTES": str(2 * 1024 * 1024),
        "INSPYRENET_BODY_TIMEOUT": "3",
    }
    process = start_server(toy_bundle, env=env, block_torch=True)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == code
    assert error["title"]
    return error["detail"]


def test_multipart_urlencoded_and_json_bodies_give_the_same_cutout(client):
    encoded = base64.b64encode(PHOTO).decode()
    answers = [
        client.post(ROUTE, files={"image_file": ("cat.jpg", PHOTO)}, data={"size": "full"}),
        client.post(ROUTE, data={"image_file_b64": encoded, "size": "full", "crop": "false", "scale": ""}),
        client.post(ROUTE, json={"image_file_b64": encoded, "size": "full", "crop": False, "scale": None}),
        client.post(ROUTE, json={"image_file_b64": "data:image/jpeg;base64," + encoded, "size": "full"}),
    ]
    ours = client.post(API, content=PHOTO, headers={"Content-Type": "image/jpeg"})
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.content == ours.content  # byte-identical to our route
        assert answer.headers["content-type"] == "image/png"
        assert (answer.headers["x-width"], answer.headers["x-height"]) == ("451", "300")
        assert answer.headers["x-credits-charged"] == "0"
        assert answer.headers["x-backend"] == "onnxruntime"
        assert "inference;dur=" in answer.headers["server-timing"]


def test_the_same_cutout_for_the_outputs_both_routes_have(client):
    pairs = [({"channels": "alpha", "format": "png"}, {"output": "mask"}), ({"format": "webp"}, {"format": "webp"})]
    for removebg_params, our_params in pairs:
        theirs = client.post(ROUTE, files={"image_file": ("a", PHOTO)}, data={"size": "full", **removebg_params})
        ours = client.post(API, content=PHOTO, headers={"Content-Type": "image/jpeg"}, params=our_params)
        assert theirs.status_code == ours.status_code == 200
        assert theirs.content == ours.content


def test_json_answer_with_the_foreground_box(client):
    answer = client.post(
        ROUTE,
        files={"image_file": ("a.png", half_black())},
        data={"size": "full", "crop": "true", "crop_margin": "10px"},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    data = answer.json()["data"]
    img = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert img.size == (int(answer.headers["x-width"]), int(answer.headers["x-height"]))
    assert (data["foreground_top"], data["foreground_left"]) == (10, 10)  # the margin
    assert img.size == (data["foreground_width"] + 20, data["foreground_height"] + 20)
    assert data["foreground_width"] <= 451 // 2 + 2  # the black half is gone
    for name in ("top", "left", "width", "height"):
        assert answer.headers[f"x-foreground-{name}"] == str(data[f"foreground_{name}"])


def test_size_preview_format_zip_type_and_ignored_parameters(client):
    big = photo_bytes(size=(1200, 900))
    answer = client.post(
        ROUTE,
        files={"image_file": ("a", big)},
        data={"format": "zip", "type": "product", "type_level": "2", "add_shadow": "true", "shadow_type": "drop"},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    color, alpha = Image.open(archive.open("color.jpg")), Image.open(archive.open("alpha.png"))
    assert color.size == alpha.size
    assert color.size[0] * color.size[1] <= 250_000  # preview: 0.25 MP
    assert answer.headers["x-type"] == "product"
    assert answer.headers["x-shadow"] == "not applied"
    assert answer.headers["x-ignored-parameters"] == "shadow_type"
    quiet = client.post(ROUTE, files={"image_file": ("a", PHOTO)}, data={"type_level": "none"})
    assert "x-type" not in quiet.headers


def test_backgrounds_colour_file_and_url(client, image_host):
    red = client.post(ROUTE, files={"image_file": ("a", half_black())}, data={"size": "full", "bg_color": "f00"})
    img = Image.open(io.BytesIO(red.content))
    assert red.headers["content-type"] == "image/jpeg"
    assert np.abs(np.asarray(img)[5, 5] - (255, 0, 0)).max() < 10
    backdrop = io.BytesIO()
    Image.new("RGB", (90, 60), (0, 0, 255)).save(backdrop, format="PNG")
    blue = client.post(
        ROUTE,
        files={"image_file": ("a", half_black()), "bg_image_file": ("bg.png", backdrop.getvalue())},
        data={"size": "full", "format": "png"},
    )
    pixels = np.asarray(Image.open(io.BytesIO(blue.content)))
    assert blue.status_code == 200
    assert pixels.shape == (300, 451, 4)
    assert tuple(pixels[5, 5]) == (0, 0, 255, 255)
    both = client.post(
        ROUTE, files={"image_file": ("a", PHOTO), "bg_image_file": ("b", PHOTO)}, data={"bg_color": "fff"}
    )
    assert "one background" in error_of(both, 400, "invalid_parameters")
    bad_bg = client.post(ROUTE, files={"image_file": ("a", PHOTO), "bg_image_file": ("b", b"not an image")})
    assert "bg_image" in error_of(bad_bg, 400, "unknown_format")
    private = client.post(
        ROUTE, json={"image_file_b64": base64.b64encode(PHOTO).decode(), "bg_image_url": image_host.url}
    )
    assert "bg_image_url" in error_of(private, 400, "url_refused")


def test_roi_without_a_subject_is_remove_bgs_unknown_foreground(client):
    answer = client.post(ROUTE, files={"image_file": ("a", half_black())}, data={"roi": "0% 0% 40% 100%"})
    assert "could not identify a foreground" in error_of(answer, 400, "unknown_foreground")


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "words"),
    [
        ({"data": {"size": "full"}}, 400, "missing_source", "no image given"),
        ({"json": {"image_file_b64": ""}}, 400, "missing_source", "no image given"),
        ({"files": {"image_file": ("a", b"")}}, 400, "missing_source", "no image given"),
        (
            {"files": {"image_file": ("a", PHOTO)}, "data": {"image_url": "https://example.com/a.jpg"}},
            400,
            "multiple_sources",
            "image_file, image_url",
        ),
        ({"data": {"image_file": "abc"}}, 400, "invalid_parameters", "must be a file part"),
        ({"json": {"image_file_b64": "not base64!"}}, 400, "invalid_request", "not valid base64"),
        ({"json": {"image_file_b64": 12}}, 400, "invalid_parameters", "base64 string"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_request", "JSON"),
        ({"json": ["a list"]}, 400, "invalid_request", "must be an object"),
        ({"content": PHOTO, "headers": {"Content-Type": "image/jpeg"}}, 400, "unsupported_content_type", "image/jpeg"),
        ({"files": {"image_file": ("a", PHOTO[:3000])}}, 400, "invalid_request", "could not be decoded"),
        ({"files": {"image_file": ("a", b"hello")}}, 400, "unknown_format", "not an image"),
        ({"files": {"image_file": ("a", PHOTO)}, "data": {"format": "bmp"}}, 400, "invalid_parameters", "'format'"),
        ({"files": {"image_file": ("a", PHOTO)}, "data": {"sharpen": "1"}}, 400, "invalid_parameters", "'sharpen'"),
        ({"files": {"image_file": ("a", PHOTO), "extra": ("b", PHOTO)}}, 400, "invalid_parameters", "'extra'"),
        ({"files": {"image_file": ("a", b"x" * (2 * 1024 * 1024 + 1))}}, 413, "file_too_large", "over the limit"),
    ],
)
def test_bad_requests_get_remove_bgs_error_shape_never_a_500(client, kwargs, status, code, words):
    assert words in error_of(client.post(ROUTE, **kwargs), status, code)


def test_image_url_refuses_loopback_names_and_redirects_to_private_addresses(client, image_host):
    for url in (image_host.url, f"http://localhost:{image_host.port}/a.jpg", f"{image_host.url}/to-metadata"):
        detail = error_of(client.post(ROUTE, data={"image_url": url}), 400, "url_refused")
        assert "non-public address" in detail
    assert image_host.requests == []  # never contacted
    assert "only http and https" in error_of(
        client.post(ROUTE, data={"image_url": "file:///etc/passwd"}), 400, "url_refused"
    )


def test_over_the_admission_limit_the_answer_is_429_with_retry_after(server, client):
    head = b"POST /v1.0/removebg HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]  # admitted, then send no body
    try:
        for sock in held:
            sock.sendall(head)
        time.sleep(0.5)
        answer = client.post(ROUTE, files={"image_file": ("a", PHOTO)})
        assert "limit of 2 requests in flight" in error_of(answer, 429, "rate_limit_exceeded")
        assert int(answer.headers["retry-after"]) >= 1
    finally:
        for sock in held:
            sock.close()
    time.sleep(3.5)  # the held requests' body deadline (3 s) frees their slots
    assert client.post(ROUTE, files={"image_file": ("a", PHOTO)}).status_code == 200


def test_without_a_server_key_any_key_passes(client):
    answer = client.post(ROUTE, files={"image_file": ("a", PHOTO)}, headers={"X-Api-Key": "anything"})
    assert answer.status_code == 200


def test_a_wrong_or_missing_key_is_403_and_urls_are_off_by_default(toy_bundle):
    server = start_server(toy_bundle, env={"LIT_SERVER_API_KEY": "k"}, block_torch=True)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for headers in ({}, {"X-Api-Key": "wrong"}):
                answer = client.post(ROUTE, files={"image_file": ("a", PHOTO)}, headers=headers)
                assert "X-API-Key" in error_of(answer, 403, "auth_failed")
            good = client.post(ROUTE, files={"image_file": ("a", PHOTO)}, headers={"x-api-key": "k"})
            assert good.status_code == 200
            off = client.post(ROUTE, data={"image_url": "https://example.com/a.jpg"}, headers={"X-Api-Key": "k"})
            assert "INSPYRENET_REMOVEBG_URL_HOSTS" in error_of(off, 400, "url_disabled")
            assert client.post(API, content=PHOTO, headers={"Content-Type": "image/jpeg"}).status_code == 401  # ours
    finally:
        server.stop()
