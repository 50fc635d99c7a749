"""One real request to a running serving image, checked against this checkout's own serving code.

    python scripts/image_request.py URL BUNDLE_DIR

Sends a photo (scikit-image's chelsea, 451x300) as a raw PNG body, asks for
the mask, and compares it pixel by pixel with the mask this checkout computes
from the same bundle with ONNX Runtime on the CPU. Prints one JSON object;
exits 1 if the answer is not a mask of the photo's size within 2/255 of ours.
scripts/image-check.sh runs it (with the test venv's Python) against each image.
"""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.request

import numpy as np
from PIL import Image

from pipeline.samples import photo
from serving.backends import open_backend
from serving.bundle import load_bundle
from serving.imaging.contract import mask_to_uint8, preprocess, upsample_mask

TOLERANCE = 2  # of 255: the image may run another ONNX Runtime build (CUDA, or another CPU kernel)


def expected_mask(bundle_dir: str, img: Image.Image, artifact: str) -> np.ndarray:
    """The mask this checkout computes with ``artifact`` (an ONNX Runtime one), on the CPU."""
    bundle = load_bundle(bundle_dir, verify=False)
    backend = open_backend(bundle, bundle.artifact(artifact), device="cpu")
    mask = backend.infer(preprocess(img, bundle.input_size))[0, 0]
    return mask_to_uint8(upsample_mask(mask, (img.height, img.width)))


def served_artifact(url: str) -> str:
    """The artifact the server says it serves (/health: "ok NAME DEVICE"); ONNX Runtime's fp32 one when that
    is not ONNX Runtime's (a TensorRT engine is compared with the fp32 graph it was checked against)."""
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        words = response.read().decode().split()
    return words[1] if len(words) == 3 and words[1].startswith("onnxruntime") else "onnxruntime"


def main(url: str, bundle_dir: str) -> int:
    img = photo("chelsea")
    artifact = served_artifact(url)
    body = io.BytesIO()
    img.save(body, format="PNG")
    request = urllib.request.Request(
        f"{url}/v1/remove-background?output=mask",
        data=body.getvalue(),
        headers={"Content-Type": "image/png"},
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer, status, headers = response.read(), response.status, response.headers
    seconds = time.perf_counter() - start
    served = np.asarray(Image.open(io.BytesIO(answer)))
    result = {
        "status": status,
        "seconds": round(seconds, 3),
        "backend": headers.get("X-Backend"),
        "artifact": artifact,
        "content_type": headers.get("Content-Type"),
        "shape": list(served.shape),
    }
    ok = status == 200 and served.shape == (img.height, img.width)
    if ok:
        diff = np.abs(served.astype(np.int16) - expected_mask(bundle_dir, img, artifact).astype(np.int16))
        result.update(
            max_diff=int(diff.max()),
            mean_diff=round(float(diff.mean()), 4),
            foreground_share=round(float((served > 127).mean()), 4),
        )
        ok = result["max_diff"] <= TOLERANCE
    result["ok"] = bool(ok)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
