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
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from cnnctl.serve.batching import Batcher
from cnnctl.serve.inference import Classifier
from cnnctl.serve.uploads import Limits, Upload, UploadError, images_of

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


def error_body(status: int, message: str, images: list[dict] | None = None) -> bytes:
    body = {"error": message, "status": status}
    if images is not None:
        body["images"] = images
    return json.dumps(body).encode()


def error(status: int, message: str, images: list[dict] | None = None) -> Response:
    return Response(error_body(status, message, images), status_code=status,
                    media_type="application/json")


def refuse_unreadable(uploads: list[Upload], reasons: list[str | None]) -> None:
    """Raises UploadError (422) naming the first upload that is no readable image (and how
    many more), with every one of them in `images`, when there is any."""
    bad = [{"index": i, "name": u.name, "error": reason}
           for i, (u, reason) in enumerate(zip(uploads, reasons)) if reason is not None]
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more: see `images`)" if len(bad) > 1 else ""
        raise UploadError(422, f"image {first['index'] + 1} of {len(uploads)} "
                               f"({first['name']}): {first['error']}{more}", bad)


def create_app(classifier: Classifier, settings: Settings) -> PredictInFront:
    """The ASGI app serving `classifier` (opened and warmed up: see
    `inference.open_classifier`): `POST /predict` in front of the FastAPI app."""
    model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cnnctl-model")
    decoders = concurrent.futures.ThreadPoolExecutor(
        max(2, len(os.sched_getaffinity(0))), thread_name_prefix="cnnctl-decode")
    state = {"batcher": None, "ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(classifier.classify_decoded, settings.max_batch, settings.max_wait_s,
                          model_thread, prepare=classifier.decode_each)
        batcher.start()
        state.update(batcher=batcher, ready=True)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()
            decoders.shutdown(wait=True)
            model_thread.shutdown(wait=True)

    app = FastAPI(title="cnnctl serve", lifespan=lifespan,
                  description="Image classification with a trained cnnctl run.")
    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.exception_handler(UploadError)
    async def refused(request: Request, e: UploadError):
        return error(e.status, e.message, e.images)

    async def decoded(request: Request) -> tuple[list[str], np.ndarray]:
        uploads = await images_of(request, settings.limits)
        batch, reasons = await asyncio.get_running_loop().run_in_executor(
            decoders, classifier.decode, [u.data for u in uploads])
        refuse_unreadable(uploads, reasons)
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

    async def predict(request: Request) -> tuple[int, bytes]:
        """The status and JSON body answering a `POST /predict`. The raw uploads go to the
        batcher, which decodes them on the model thread while it gathers their batch."""
        try:
            top_k = top_k_of(request, settings.top_k)
            uploads = await images_of(request, settings.limits)
            answers = await state["batcher"].classify([u.data for u in uploads])
            refuse_unreadable(uploads, [a if isinstance(a, str) else None for a in answers])
        except UploadError as e:
            return e.status, error_body(e.status, e.message, e.images)
        return 200, json.dumps({"predictions": [
            {"name": u.name, "top": classifier.top(p, top_k)}
            for u, p in zip(uploads, answers)]}).encode()

    async def predict_route(request: Request) -> Response:  # what /docs shows and tries
        status, body = await predict(request)
        return Response(body, status_code=status, media_type="application/json")

    app.add_api_route("/predict", predict_route, methods=["POST"],
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

    return PredictInFront(predict, app)


class PredictInFront:
    """The ASGI app of `cnnctl serve`: `POST /predict`, the path that takes the load, answered
    directly, every other request (and the lifespan) passed to the FastAPI app, which documents
    `/predict` too with the same handler. Starlette's middleware, router and response objects
    around a handler cost more CPU per request than the decode of a small image (py-spy under
    load, BENCHMARKS.md "Serving")."""

    JSON_HEADERS = [(b"content-type", b"application/json")]

    def __init__(self, predict: Callable[[Request], Awaitable[tuple[int, bytes]]],
                 app: FastAPI):
        self.predict, self.app = predict, app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            status, body = await self.predict(Request(scope, receive))
        except ClientDisconnect:  # the client left before its body arrived: nobody to answer
            return
        await send({"type": "http.response.start", "status": status, "headers": [
            *self.JSON_HEADERS, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
