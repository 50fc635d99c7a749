"""The LitServe server, started for real on a loopback port, over real HTTP.

The main server runs with torch made unimportable in all of its processes:
every test here also proves the ONNX Runtime path never imports torch.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.harness import API, alive, decode, descendants, metric, photo_bytes, post_image, start_server

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def server(toy_bundle):
    """The server on the toy bundle (tests/toy_bundle.py): the real contract, a tiny ONNX model."""
    env = {
        "INSPYRENET_CORS_ORIGINS": ORIGIN,
        "INSPYRENET_MAX_BODY_BYTES": str(3 * 1024 * 1024),
        "INSPYRENET_MAX_IN_FLIGHT": "32",  # room for the twenty concurrent requests below
        "INSPYRENET_LOG_LEVEL": "info",
    }  # uvicorn's and LitServe's lines too
    process = start_server(toy_bundle, env=env, block_torch=True)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


def test_health_turns_200_only_when_warm(server):
    assert server.health_codes[0] != 200  # refused (or 503) while the worker loads and warms up
    assert server.health_codes[-1] == 200
    phases = {line["phase"] for line in server.log_lines() if line.get("message") == "startup phase"}
    assert {"manifest", "verify", "imports", "load", "warmup", "total"} <= phases
    ready = [line for line in server.log_lines() if line.get("message") == "ready"]
    assert ready
    assert ready[0]["backend"] == "onnxruntime"


def test_every_log_line_is_one_json_object_ours_and_uvicorns(server):
    lines = server.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert all({"time", "severity", "message"} <= set(record) for record in records)
    assert {"uvicorn.error"} <= {record.get("logger") for record in records}  # a library's line, our format
    assert "ready" in {record["message"] for record in records if "logger" not in record}
    assert not [line for line in lines if "Uvicorn running" in line and not line.startswith("{")]


def test_default_output_is_rgba_png_of_input_size(client):
    response = post_image(client, photo_bytes())
    img = decode(response)
    assert response.headers["content-type"] == "image/png"
    assert img.format == "PNG"
    assert img.mode == "RGBA"
    assert img.size == (451, 300)
    assert response.headers["x-backend"] == "onnxruntime"
    assert float(response.headers["x-inference-ms"]) > 0
    assert float(response.headers["x-total-ms"]) > 0
    assert (response.headers["x-image-width"], response.headers["x-image-height"]) == ("451", "300")
    assert f'size;desc="{len(response.content)} bytes png"' in response.headers["server-timing"]


def test_alpha_equals_the_served_mask_and_the_model(client, toy_bundle):
    data = photo_bytes()
    rgba = np.asarray(decode(post_image(client, data)))
    mask = decode(post_image(client, data, output="mask"))
    assert mask.mode == "L"
    assert np.array_equal(rgba[..., 3], np.asarray(mask))
    # The same computation in-process, through the serving code: the server adds nothing.
    from serving.backends import open_backend
    from serving.bundle import load_bundle
    from serving.imaging.contract import decode_image, mask_to_uint8, preprocess, upsample_mask

    bundle = load_bundle(toy_bundle, verify=False)
    backend = open_backend(bundle, bundle.artifact("onnxruntime"), device="cpu")
    img = decode_image(data)
    expected = mask_to_uint8(upsample_mask(backend.infer(preprocess(img, bundle.input_size))[0, 0], (300, 451)))
    assert np.abs(np.asarray(mask).astype(int) - expected).max() <= 1
    assert 10 < np.asarray(mask).mean() < 245  # not a blank mask
    # RGB channels of the cutout are the input's (no refine).
    assert np.array_equal(rgba[..., :3], np.asarray(img))


def test_the_mobile_paths_mask_comes_back_at_the_uploaded_size_in_both_encodings(client, toy_bundle):
    """clients/web uploads the photo resized to the model's input size (GET /info says which) and asks for
    output=mask: the answer is the model's own mask at that size, with no resize on either side; PNG is
    single-channel, lossless WebP decodes to the same levels."""
    info = client.get("/info").json()
    size = (info["input"]["width"], info["input"]["height"])
    assert size == (384, 384)
    upload = photo_bytes("PNG", size=size)  # lossless, at the model's size
    png = decode(post_image(client, upload, "image/png", output="mask", format="png"))
    webp = decode(post_image(client, upload, "image/png", output="mask", format="webp"))
    assert (png.mode, png.size) == ("L", size)
    assert webp.size == size
    assert np.array_equal(np.asarray(webp.convert("L")), np.asarray(png))
    from serving.backends import open_backend
    from serving.bundle import load_bundle
    from serving.imaging.contract import decode_image, mask_to_uint8, preprocess

    bundle = load_bundle(toy_bundle, verify=False)
    backend = open_backend(bundle, bundle.artifact("onnxruntime"), device="cpu")
    model_mask = backend.infer(preprocess(decode_image(upload), bundle.input_size))[0, 0]
    assert np.array_equal(np.asarray(png), mask_to_uint8(model_mask))  # the model's mask, only quantised
    other = decode(post_image(client, photo_bytes("PNG", size=(500, 300)), "image/png", output="mask"))
    assert other.size == (500, 300)  # any other size: the mask at the size it was sent


def test_multipart_and_json_inputs(client):
    data = photo_bytes()
    multipart = client.post(API, files={"image": ("cat.jpg", data, "image/jpeg")}, data={"output": "mask"})
    as_json = client.post(API, json={"image": base64.b64encode(data).decode(), "output": "mask"})
    data_url = client.post(
        API, json={"image": "data:image/jpeg;base64," + base64.b64encode(data).decode()}, params={"output": "mask"}
    )
    raw = post_image(client, data, output="mask")
    # A data URL with parameters (RFC 2397) and base64 wrapped at 76 columns, as MIME tools write it.
    data_url_with_name = "data:image/jpeg;name=cat.jpg;base64," + base64.encodebytes(data).decode()
    wrapped = client.post(API, json={"image": data_url_with_name, "output": "mask"})
    masks = [np.asarray(decode(r)) for r in (multipart, as_json, data_url, raw, wrapped)]
    for other in masks[1:]:
        assert np.array_equal(masks[0], other)


@pytest.mark.parametrize(
    ("params", "fmt", "mode"),
    [
        ({"output": "rgb", "format": "jpeg", "bg_color": "#00ff00"}, "JPEG", "RGB"),
        ({"output": "rgba", "format": "webp"}, "WEBP", "RGBA"),
        ({"output": "mask", "format": "webp"}, "WEBP", None),
        ({"output": "mask", "format": "jpeg"}, "JPEG", "L"),
        ({"output": "rgb"}, "PNG", "RGB"),
    ],
)
def test_output_types_and_formats(client, params, fmt, mode):
    response = post_image(client, photo_bytes(), **params)
    img = decode(response)
    assert img.format == fmt
    assert img.size == (451, 300)
    if mode:
        assert img.mode == mode
    assert response.headers["content-type"] == f"image/{fmt.lower()}"


def test_webp_is_lossless_unless_a_quality_is_asked_and_alpha_stays_exact(client):
    data = photo_bytes()
    png = np.asarray(decode(post_image(client, data)))
    lossless = np.asarray(decode(post_image(client, data, format="webp")).convert("RGBA"))
    lossy = post_image(client, data, format="webp", quality="60")
    lossy_pixels = np.asarray(decode(lossy).convert("RGBA")).astype(int)
    assert np.array_equal(lossless, png)
    assert np.array_equal(lossy_pixels[..., 3], png[..., 3])  # lossy colour, lossless alpha
    visible = png[..., 3] > 128  # the synthetic weights give a soft mask: few pixels are fully opaque
    assert 0 < np.abs(lossy_pixels[visible][:, :3] - png[visible][:, :3]).mean() < 8
    small = post_image(client, data, format="jpeg", output="rgb", quality="30")
    large = post_image(client, data, format="jpeg", output="rgb", quality="95")
    assert decode(small).size == decode(large).size
    assert len(small.content) < len(large.content)


def test_rgb_composites_on_the_background_colour(client):
    data = photo_bytes()
    mask = np.asarray(decode(post_image(client, data, output="mask"))).astype(float) / 255
    rgb = np.asarray(decode(post_image(client, data, output="rgb", bg_color="#00ff00"))).astype(float)
    background = mask < 0.02
    assert background.any()
    assert np.abs(rgb[background] - [0, 255, 0]).max() <= 6


def test_threshold_reverse_and_max_size(client):
    data = photo_bytes()
    soft = np.asarray(decode(post_image(client, data, output="mask")))
    hard = np.asarray(decode(post_image(client, data, output="mask", threshold=0.5)))
    assert set(np.unique(hard)) <= {0, 255}
    assert np.array_equal(hard == 255, soft / 255 > 0.5) or (np.abs((hard == 255) ^ (soft > 127)).mean() < 0.01)
    reverse = np.asarray(decode(post_image(client, data, output="mask", threshold=0.5, reverse="true")))
    assert np.array_equal(reverse, 255 - hard)
    small = decode(post_image(client, data, max_size=200))
    assert small.size == (200, 133)


def test_refine_changes_only_edge_colours(client):
    data = photo_bytes()
    plain = np.asarray(decode(post_image(client, data))).astype(int)
    refined = np.asarray(decode(post_image(client, data, refine="true"))).astype(int)
    assert np.array_equal(plain[..., 3], refined[..., 3])
    solid = plain[..., 3] >= 254
    changed = np.abs(plain[..., :3] - refined[..., :3]).max(axis=-1) > 0
    assert changed.any()
    assert solid.any()
    # Opaque pixels keep their colour (within what 1-2 alpha levels below opaque allow).
    assert np.abs(plain[solid][:, :3] - refined[solid][:, :3]).max() <= 3


def test_exif_orientation_is_honoured(client):
    exif = Image.Exif()
    exif[0x0112] = 6
    response = post_image(client, photo_bytes(exif=exif.tobytes()))
    assert decode(response).size == (300, 451)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("CMYK", "JPEG"), ("I;16", "PNG"), ("P", "PNG"), ("L", "JPEG"), ("LA", "PNG"), ("RGBA", "PNG"), ("1", "PNG")],
)
def test_image_modes_work(client, mode, fmt):
    if mode == "I;16":
        gray = np.asarray(Image.open(io.BytesIO(photo_bytes())).convert("L"), dtype=np.uint16) * 257
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = photo_bytes(fmt, mode=mode)
    img = decode(post_image(client, data, content_type=f"image/{fmt.lower()}"))
    assert img.mode == "RGBA"
    assert img.size == (451, 300)


def test_animated_gif_uses_first_frame(client):
    frames = [Image.new("RGB", (64, 48), color) for color in ((250, 10, 10), (10, 10, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    img = np.asarray(decode(post_image(client, buffer.getvalue(), content_type="image/gif")))
    assert img[24, 32, 0] > 200
    assert img[24, 32, 2] < 60


def truncated(fmt: str) -> bytes:
    data = photo_bytes(fmt)
    return data[: len(data) // 2]


def dds() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="DDS")
    return buffer.getvalue()


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (10000, 10000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "params", "status", "words"),
    [
        (b"", "image/jpeg", {}, 400, "no image data"),
        (b"", "", {}, 400, "holds no image"),
        (b"hello, not an image", "image/jpeg", {}, 415, "not an image in a supported format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", {}, 415, "supported format"),
        ("truncated-jpeg", "image/jpeg", {}, 400, "could not be decoded"),
        ("truncated-png", "image/png", {}, 400, "could not be decoded"),
        ("bomb", "image/png", {}, 413, "over the limit"),
        ("photo", "image/jpeg", {"colour": "red"}, 400, "unknown parameter 'colour'"),
        ("photo", "image/jpeg", {"output": "cutout"}, 400, "parameter 'output' must be one of"),
        ("photo", "image/jpeg", {"threshold": "2"}, 400, "between 0 and 1"),
        ("photo", "image/jpeg", {"bg_color": "blue"}, 400, "hex colour"),
        ("photo", "image/jpeg", {"max_size": "0"}, 400, "max_size"),
        ("photo", "image/jpeg", {"reverse": "maybe"}, 400, "true or false"),
        ("photo", "image/jpeg", {"format": "jpeg"}, 400, "cannot carry transparency"),
        ("photo", "image/jpeg", {"quality": "90"}, 400, "PNG is always lossless"),
        ("photo", "image/jpeg", {"format": "webp", "quality": "0"}, 400, "from 1 to 100"),
        ("photo", "image/jpeg", {"format": "webp", "quality": "\u00b9"}, 400, "from 1 to 100"),
        ("photo", "text/plain", {}, 415, "unsupported content type"),
        # curl --data-binary @photo.jpg without -H: the old answer said "holds no image data"
        ("photo", "application/x-www-form-urlencoded", {}, 400, "-H 'Content-Type: image/jpeg'"),
        ("{not json", "application/json", {}, 400, "not valid JSON"),
        ('{"image": "%%%"}', "application/json", {}, 400, "not valid base64"),
        ('{"picture": "abc"}', "application/json", {}, 400, "field 'image'"),
        ("oversized", "image/jpeg", {}, 413, "over the limit"),
        # Each of these was a plain-text 500 (an attack on the server found them).
        ("dds", "image/x-dds", {}, 415, "not an image in a supported format"),
        ("dds", "application/octet-stream", {}, 415, "not an image in a supported format"),
        ("photo", "image/jpeg", {"max_size": "\u00b2"}, 400, "max_size"),
        ("photo", "image/jpeg", {"max_size": "9" * 5000}, 400, "max_size"),
        ('{"image": "AAAA", "threshold": ' + "1" * 5000 + "}", "application/json", {}, 400, "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "application/json", {}, 400, "not valid JSON"),
    ],
)
def test_bad_input_gets_a_4xx_json_error(client, body, content_type, params, status, words):
    payloads = {
        "truncated-jpeg": lambda: truncated("JPEG"),
        "truncated-png": lambda: truncated("PNG"),
        "bomb": bomb,
        "photo": photo_bytes,
        "oversized": lambda: os.urandom(4 * 1024 * 1024),
        "dds": dds,
    }
    if isinstance(body, str):
        body = payloads[body]() if body in payloads else body.encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(API, content=body, headers=headers, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["detail"]


def test_server_keeps_serving_after_bad_input(client):
    for body in (b"", b"junk", truncated("PNG")):
        post_image(client, body)
    assert client.get("/health").status_code == 200
    assert decode(post_image(client, photo_bytes())).mode == "RGBA"


def test_twenty_concurrent_requests_are_all_correct(client):
    sizes = [(200 + 17 * i, 150 + 9 * i) for i in range(20)]
    bodies = [photo_bytes(size=size) for size in sizes]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda b: post_image(client, b, output="mask"), bodies))
    for size, response in zip(sizes, responses):
        assert decode(response).size == size


def test_warmup_answers_at_once_with_cors(client):
    response = client.post("/warmup", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "warm"
    assert body["backend"] == "onnxruntime"
    assert body["startup_seconds"] > 0
    assert response.headers["access-control-allow-origin"] == ORIGIN


def test_cors_preflight(client):
    allowed = client.options(
        API,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    denied = client.options(API, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in denied.headers
    response = post_image(client, photo_bytes(), output="mask")
    assert "access-control-allow-origin" not in response.headers  # no Origin sent, no CORS headers
    with_origin = client.post(
        API, content=photo_bytes(), params={"output": "mask"}, headers={"Content-Type": "image/jpeg", "Origin": ORIGIN}
    )
    assert "x-inference-ms" in with_origin.headers["access-control-expose-headers"].lower()


def settled_metrics(client, **labels) -> str:
    """/metrics once every answered request is counted: the gateway counts a request just after its response."""
    text = client.get("/metrics").text
    for _ in range(40):
        time.sleep(0.05)
        again = client.get("/metrics").text
        if metric(again, "inspyrenet_requests_total", **labels) == metric(text, "inspyrenet_requests_total", **labels):
            return again
        text = again
    return text


def test_metrics_move(client):
    ok = {"route": API, "status": "200"}
    bad = {"route": API, "status": "415"}
    before = settled_metrics(client, **ok)
    post_image(client, photo_bytes(), output="mask")
    post_image(client, b"junk")
    after = settled_metrics(client, **ok)
    assert metric(after, "inspyrenet_requests_total", **ok) == metric(before, "inspyrenet_requests_total", **ok) + 1
    assert metric(after, "inspyrenet_requests_total", **bad) == metric(before, "inspyrenet_requests_total", **bad) + 1
    for stage in ("decode", "preprocess", "inference", "postprocess", "encode"):
        assert metric(after, "inspyrenet_stage_seconds_count", stage=stage) > metric(
            before, "inspyrenet_stage_seconds_count", stage=stage
        )
    assert metric(after, "inspyrenet_startup_seconds") > 0
    assert metric(after, "inspyrenet_backend_info", backend="onnxruntime", device="cpu") == 1


KEY = "s3cret-clé"
KEY_HEADER = {"X-API-Key": KEY.encode("utf-8")}


@pytest.fixture(scope="module")
def keyed_server(toy_bundle):
    process = start_server(toy_bundle, env={"LIT_SERVER_API_KEY": KEY, "INSPYRENET_WORKERS": "2"})
    yield process
    process.stop()


def test_api_key_guards_inference(keyed_server):
    with httpx.Client(base_url=keyed_server.url, timeout=120) as http:
        assert http.get("/health").status_code == 200  # the startup probe sends no key
        refused = http.post(API, content=photo_bytes(), headers={"Content-Type": "image/jpeg"})
        assert refused.status_code == 401
        assert "X-API-Key" in refused.json()["detail"]
        wrong = http.post(API, content=photo_bytes(), headers={"Content-Type": "image/jpeg", "X-API-Key": "nope"})
        assert wrong.status_code == 401
        ok = http.post(API, content=photo_bytes(), headers={"Content-Type": "image/jpeg", **KEY_HEADER})
        assert ok.status_code == 200  # a non-ASCII key, sent as UTF-8, matches
        assert http.get("/metrics").status_code == 401
        info = http.get("/info")  # a page asks for the input size before it has a photo: no key
        assert info.status_code == 200
        assert info.json()["input"] == {"width": 384, "height": 384, "resize": info.json()["input"]["resize"]}
        assert info.json()["backend"] == "onnxruntime"
        mask = http.post(API, content=photo_bytes(), params={"output": "mask"}, headers={"Content-Type": "image/jpeg"})
        assert mask.status_code == 401  # the mask answer is a cutout: behind the key


def ready_workers(server, seconds: float = 120) -> set[str]:
    """The workers that logged "ready" (/health is 200 once one is warm: wait for the other)."""
    deadline = time.monotonic() + seconds
    while True:
        ready = {line["worker"] for line in server.log_lines() if line.get("message") == "ready"}
        if len(ready) >= 2 or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


def test_metrics_count_across_two_workers(keyed_server):
    assert ready_workers(keyed_server) == {"0", "1"}
    with httpx.Client(base_url=keyed_server.url, timeout=120) as http:
        before = metric(
            http.get("/metrics", headers=KEY_HEADER).text, "inspyrenet_stage_seconds_count", stage="inference"
        )
        headers = {"Content-Type": "image/jpeg", **KEY_HEADER}
        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(
                pool.map(lambda _: http.post(API, content=photo_bytes(), headers=headers).status_code, range(6))
            )
        assert codes == [200] * 6
        after = metric(
            http.get("/metrics", headers=KEY_HEADER).text, "inspyrenet_stage_seconds_count", stage="inference"
        )
    assert after == before + 6


@pytest.fixture(scope="module")
def draining_server(fast_bundle):
    """The real model (a request stays in flight long enough to be drained), two workers, the key."""
    process = start_server(fast_bundle, env={"LIT_SERVER_API_KEY": KEY, "INSPYRENET_WORKERS": "2"})
    yield process
    process.stop()


def test_sigterm_finishes_in_flight_requests_and_leaves_no_process(draining_server):
    family = descendants(draining_server.process.pid)
    assert len(family) >= 3  # HTTP server(s), inference workers, LitServe's manager
    result = {}
    big = photo_bytes(size=(3000, 2000))  # made before the clock starts: a slow CPU takes seconds over it
    uploaded = threading.Event()

    def body():
        step = 256 * 1024
        for start in range(0, len(big), step):
            yield big[start : start + step]
        uploaded.set()

    def slow_request():
        with httpx.Client(base_url=draining_server.url, timeout=120) as http:
            result["response"] = http.post(
                API,
                content=body(),
                headers={"Content-Type": "image/jpeg", **KEY_HEADER},
                params={"refine": "true"},
            )
        result["done_at"] = time.monotonic()

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert uploaded.wait(timeout=60)
    time.sleep(0.5)  # the whole body is on the server: the request is in flight, not merely connecting
    sigterm_at = time.monotonic()
    draining_server.process.terminate()  # SIGTERM, as Cloud Run sends
    thread.join(timeout=120)
    assert draining_server.process.wait(timeout=90) == 0
    assert result["response"].status_code == 200
    assert result["done_at"] > sigterm_at  # it really was in flight when SIGTERM came
    assert decode(result["response"]).size == (3000, 2000)
    assert "Already not alive" not in draining_server.log_path.read_text()  # our drain stopped them first
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in family if alive(pid)]


@pytest.fixture(scope="module")
def batched_server(toy_bundle):
    env = {"INSPYRENET_MAX_BATCH_SIZE": "4", "INSPYRENET_BATCH_TIMEOUT": "0.5"}
    process = start_server(toy_bundle, env=env)
    yield process
    process.stop()


def test_batched_requests_match_single_requests(batched_server, client):
    sizes = [(300 + 13 * i, 200 + 7 * i) for i in range(8)]
    bodies = [photo_bytes(size=size) for size in sizes]
    with httpx.Client(base_url=batched_server.url, timeout=300) as http:
        with ThreadPoolExecutor(max_workers=8) as pool:
            batched = list(
                pool.map(
                    lambda b: http.post(
                        API, content=b, params={"output": "mask"}, headers={"Content-Type": "image/jpeg"}
                    ),
                    bodies,
                )
            )
        text = http.get("/metrics").text
    assert metric(text, "inspyrenet_batch_size_sum") > metric(text, "inspyrenet_batch_size_count")  # real batches
    for body, size, response in zip(bodies, sizes, batched):
        ours = np.asarray(decode(response)).astype(int)
        single = np.asarray(decode(post_image(client, body, output="mask"))).astype(int)
        assert ours.shape == (size[1], size[0])
        assert np.abs(ours - single).max() <= 1  # per-sample normalisation: batching changes nothing visible
