"""The HTTP API and web page of `cnnctl serve` (FastAPI): `POST /predict`, `POST /explain`,
`GET /metadata`, `GET /healthz`, the page at `/` and FastAPI's OpenAPI docs at `/docs`."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from cnnctl.serve.batching import Batcher
from cnnctl.serve.inference import Classifier
from cnnctl.serve.uploads import Limits, UploadError, images_of

PAGE = Path(__file__).parent / "page"

# How a request may carry its images, for the OpenAPI docs (the body is read by `uploads`).
IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"oneOf": [
            {"type": "string", "format": "byte"},
            {"type": "object", "required": ["data"], "properties": {
                "name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}]}}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}


@dataclasses.dataclass(frozen=True)
class Settings:
    max_batch: int = 64
    max_wait_s: float = 0.005
    top_k: int = 5
    limits: Limits = Limits(max_bytes=20 * 2**20, max_images=64, read_timeout_s=30.0)


TOP_K = {"name": "top_k", "in": "query", "required": False, "description": "classes per image "
         "(default: the server's --top-k)", "schema": {"type": "integer", "minimum": 1}}


def top_k_of(request: Request, default: int) -> int:
    """The request's `?top_k=`, else `default`.

    Raises:
        UploadError: not a whole number of at least 1.
    """
    given = request.query_params.get("top_k")
    if given is None:
        return default
    if not given.strip().isdigit() or int(given) < 1:
        raise UploadError(422, f"top_k={given!r}: give a whole number of classes, at least 1")
    return int(given)


def json_response(body: dict) -> Response:
    return Response(json.dumps(body).encode(), media_type="application/json")


def error(status: int, message: str, images: list[dict] | None = None) -> JSONResponse:
    body = {"error": message, "status": status}
    if images is not None:
        body["images"] = images
    return JSONResponse(body, status_code=status)


def create_app(classifier: Classifier, settings: Settings) -> Starlette:
    """The app serving `classifier` (opened and warmed up: see `inference.open_classifier`).

    `POST /predict`, the path that takes the load, is a plain Starlette route in front of the
    FastAPI app that serves everything else (and documents `/predict` too, with the same
    handler): FastAPI's per-request work around a handler (parameter solving, its telemetry
    middleware) cost more CPU than the decode of a small image, measured with py-spy under
    load (BENCHMARKS.md, "Serving")."""
    model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cnnctl-model")
    decoders = concurrent.futures.ThreadPoolExecutor(
        max(2, len(os.sched_getaffinity(0))), thread_name_prefix="cnnctl-decode")
    state = {"batcher": None, "ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(classifier.probabilities, settings.max_batch, settings.max_wait_s,
                          model_thread)
        batcher.start()
        state.update(batcher=batcher, ready=True)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()
            decoders.shutdown(wait=True)
            model_thread.shutdown(wait=True)

    app = FastAPI(title="cnnctl serve",
                  description="Image classification with a trained cnnctl run.")
    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.exception_handler(UploadError)
    async def refused(request: Request, e: UploadError):
        return error(e.status, e.message, e.images)

    async def decoded(request: Request) -> tuple[list[str], np.ndarray]:
        uploads = await images_of(request, settings.limits)
        batch, reasons = await asyncio.get_running_loop().run_in_executor(
            decoders, classifier.decode, [u.data for u in uploads])
        bad = [{"index": i, "name": u.name, "error": reason}
               for i, (u, reason) in enumerate(zip(uploads, reasons)) if reason is not None]
        if bad:
            first = bad[0]
            more = f" (and {len(bad) - 1} more: see `images`)" if len(bad) > 1 else ""
            raise UploadError(422, f"image {first['index'] + 1} of {len(uploads)} "
                                   f"({first['name']}): {first['error']}{more}", bad)
        return [u.name for u in uploads], batch

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Ready to answer: the model is loaded and compiled")
    async def healthz():
        batcher = state["batcher"]
        if not state["ready"] or batcher is None:
            return error(503, "starting or shutting down")
        return {"status": "ok", "batches": batcher.batches, "images": batcher.images}

    @app.get("/metadata", summary="The model, its classes, its inputs and its run's accuracy")
    async def metadata():
        return classifier.metadata()

    async def predict_images(request: Request) -> Response:
        try:
            top_k = top_k_of(request, settings.top_k)
            names, batch = await decoded(request)
        except UploadError as e:
            return error(e.status, e.message, e.images)
        probs = await state["batcher"].classify(batch)
        return json_response({"predictions": [{"name": name, "top": classifier.top(p, top_k)}
                                              for name, p in zip(names, probs)]})

    app.add_api_route("/predict", predict_images, methods=["POST"],
                      openapi_extra={**IMAGES_BODY, "parameters": [TOP_K]},
                      summary="Top classes of one or several images, as `cnnctl predict --json`")

    @app.post("/explain", openapi_extra=IMAGES_BODY,
              summary="Class-activation overlays (PNG, base64) as `cnnctl explain` draws them")
    async def explain_images(request: Request):
        if classifier.explain_method is None:
            return error(409, "this model gives no class-activation map (explain needs a "
                              "network ending in global average pooling and a dense layer, or "
                              "Grad-CAM on the TensorFlow backend)")
        names, batch = await decoded(request)
        overlays = await asyncio.get_running_loop().run_in_executor(
            model_thread, classifier.overlays, batch)
        return {"method": classifier.explain_method, "explanations": [
            {"name": name, "label": o["label"], "prob": o["prob"],
             "overlay": "data:image/png;base64," + base64.b64encode(o["png"]).decode()}
            for name, o in zip(names, overlays)]}

    return Starlette(routes=[Route("/predict", predict_images, methods=["POST"]), Mount("", app)],
                     lifespan=lifespan)
