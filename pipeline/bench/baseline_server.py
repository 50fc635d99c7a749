"""The stack ``inspyrenet bench`` compares against: what the current API does.

A minimal HTTP server that builds transparent-background's ``Remover`` in its
own process at start (model built in Python, checkpoint loaded), and per
request runs ``process(img, type='rgba')`` (pymatting foreground estimation)
and Pillow's default PNG save. Run: ``python -m pipeline.bench.baseline_server
MODE CHECKPOINT PORT``.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings


def build_app(mode: str, checkpoint: str):
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    warnings.filterwarnings("ignore")
    from transparent_background import Remover

    remover = Remover(mode=mode, ckpt=checkpoint, device="cpu")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    def remove(data: bytes) -> tuple[bytes, str]:
        start = time.perf_counter()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        decoded = time.perf_counter()
        out = remover.process(image, type="rgba")
        processed = time.perf_counter()
        buffer = io.BytesIO()
        out.save(buffer, format="PNG")
        saved = time.perf_counter()
        timing = (
            f"decode;dur={(decoded - start) * 1000:.1f}, process_rgba;dur={(processed - decoded) * 1000:.1f}, "
            f"png_save;dur={(saved - processed) * 1000:.1f}"
        )
        return buffer.getvalue(), timing

    async def remove_background(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body, timing = await run_in_threadpool(remove, await request.body())
        return Response(body, media_type="image/png", headers={"Server-Timing": timing})

    return Starlette(
        routes=[Route("/health", health), Route("/v1/remove-background", remove_background, methods=["POST"])]
    )


def main() -> None:
    import uvicorn

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    mode, checkpoint, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(build_app(mode, checkpoint), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
