"""`polypseg serve`: a FastAPI app around one Predictor.

  GET  /              the web page (static/index.html)
  GET  /health        {"status": "ok", "model": ..., "output": "head L4", "device": ...}
  POST /predict       multipart field "file" (an image), optional ?threshold=0..1
                      -> the predict JSON schema + "mask_png" and "overlay_png" as data: URLs
  GET  /docs          OpenAPI documentation

Limits: upload size, image pixels (checked from the header, before decoding: no decompression
bombs), a per-request timeout. Inference runs on one dedicated thread: one model, one request at a
time, so memory stays bounded however many clients connect.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import cv2
import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from polypseg.detection import DEFAULT_MIN_AREA, check_operating_point
from polypseg.errors import PolypsegError
from polypseg.imageio import encode_png, to_rgb_uint8, truncation_of
from polypseg.predict import Predictor, overlay

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 8K frame is 33 Mpx; anything larger is refused before decoding
TIMEOUT_S = 60.0


def _data_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img)).decode()


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> RGB uint8, or HTTPException with a 4xx status and a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise HTTPException(400, "empty upload")
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image header declares more than {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise HTTPException(415, "not an image (PNG, JPEG, TIFF or BMP expected)") from None
    except Exception:
        raise HTTPException(415, "not an image (unreadable header)") from None
    if w * h > max_pixels:
        raise HTTPException(413, f"image is {w}x{h}; at most {max_pixels} pixels are accepted")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise HTTPException(422, "the image could not be decoded (corrupt or truncated)")
    # OpenCV decodes cut-off files silently; the same end-marker rule as `data check`.
    problem = truncation_of(data[:8], data[-2048:])
    if problem:
        raise HTTPException(422, problem)
    return to_rgb_uint8(img, bgr=True)


def create_app(
    predictor: Predictor,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    timeout_s: float = TIMEOUT_S,
) -> FastAPI:
    app = FastAPI(
        title="polypseg", description="Polyp segmentation, detection and frame scores for colonoscopy images."
    )
    # One dedicated inference thread: requests queue for it (serialised, so one model copy and bounded
    # memory), and all inference allocations stay in one thread's malloc arena instead of one per
    # worker thread (which grew the process by ~1.3 GB over a 24-request burst).
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polypseg-inference")
    page = resources.files("polypseg.serve").joinpath("static", "index.html").read_text()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", []))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "model": predictor.meta.get("arch"),
            "input": [predictor.height, predictor.width],
            "output": predictor.output,
            "threshold": predictor.threshold,
            "min_score": predictor.min_score,
            "min_area": predictor.min_area,
            "tta": predictor.tta,
            "device": predictor.device_name(),
            "precision": predictor.precision,
        }

    @app.post("/predict")
    async def predict(
        file: UploadFile = File(...),
        threshold: float | None = Query(None, ge=0.0, le=1.0),
        min_score: float | None = Query(None, ge=0.0, le=1.0),
    ) -> dict:
        ctype = (file.content_type or "").split(";")[0]
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"content type {ctype} is not an image")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        rgb = decode_upload(data, max_pixels)

        def work():
            old = predictor.threshold, predictor.min_score
            try:
                if threshold is not None:
                    predictor.threshold = threshold
                if min_score is not None:
                    predictor.min_score = min_score
                pred = predictor.predict(rgb)
            finally:
                predictor.threshold, predictor.min_score = old
            out = pred.to_json()
            out["file"] = file.filename
            out["mask_png"] = _data_url(pred.mask.astype(np.uint8) * 255)
            out["overlay_png"] = _data_url(overlay(rgb, pred))
            return out

        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(inference, work), timeout_s
            )
        except asyncio.TimeoutError:
            raise HTTPException(503, f"inference took longer than {timeout_s} s") from None

    return app


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a busy port or a bad address is a one-line error."""
    if not 0 <= port <= 65535:
        raise PolypsegError(f"--port must be 0..65535, got {port}")
    sock = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:  # socket.gaierror for an unknown host is one too
        if sock is not None:
            sock.close()
        raise PolypsegError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run(
    checkpoint: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    min_score: float | None = None,
    prune: int | None = None,
    threshold: float | None = None,
    tta: bool = False,
    min_area: int | str = DEFAULT_MIN_AREA,
) -> None:
    """Serve `checkpoint` on host:port with Predictor.from_checkpoint's options, so that the service runs
    the model as `evaluate` measured it."""
    import uvicorn

    check_operating_point(threshold, min_area, min_score)  # before the port is taken
    sock = _listen(host, port)
    try:
        predictor = Predictor.from_checkpoint(
            checkpoint,
            device=device,
            prune=prune,
            threshold=threshold,
            tta=tta,
            min_area=min_area,
            min_score=min_score,
        )
    except BaseException:  # a model that cannot load frees the port at once
        sock.close()
        raise
    port = sock.getsockname()[1]  # the one the system chose for --port 0
    print(
        f"polypseg serving {predictor.meta.get('arch', {}).get('name')} ({predictor.output}) on http://{host}:{port}/ "
        f"({predictor.device_name()}, {predictor.precision}); API docs at /docs",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), log_level="warning"))
    server.run(sockets=[sock])
