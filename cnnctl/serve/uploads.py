"""The images of a request: read within the size and time limits, then taken from a multipart
form (fields named `files`), a JSON body of base64 strings, or a raw image body. Every way a
request can be wrong is an `UploadError` with its HTTP status and one line saying what to do."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json

from starlette.requests import Request

RAW_TYPES = ("image/", "application/octet-stream")


class UploadError(Exception):
    """A request the server refuses: `status` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str, images: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.images = status, message, images


@dataclasses.dataclass(frozen=True)
class Upload:
    name: str  # the file name the client gave, else `image N`
    data: bytes


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int  # of one request's body
    max_images: int  # per request
    read_timeout_s: float  # to receive the whole body


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body, refused (413) as soon as it is over `max_bytes`, by its
    Content-Length or while it arrives, and (408) when it takes over `read_timeout_s`."""
    mb = limits.max_bytes / 2**20
    too_large = UploadError(413, f"the request is over the upload limit of {mb:g} MB "
                                 "(--max-upload-mb); send fewer or smaller images")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise UploadError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limits.max_bytes:
            raise too_large
    chunks, size = [], 0

    async def receive():
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise too_large
            chunks.append(chunk)

    try:
        if hasattr(asyncio, "timeout"):  # Python 3.11 on: no task of its own per request
            async with asyncio.timeout(limits.read_timeout_s):
                await receive()
        else:
            await asyncio.wait_for(receive(), limits.read_timeout_s)
    except asyncio.TimeoutError:  # TimeoutError from Python 3.11 on
        raise UploadError(408, f"the request body did not arrive within "
                               f"{limits.read_timeout_s:g} s; send it at once") from None
    return b"".join(chunks)


async def images_of(request: Request, limits: Limits) -> list[Upload]:
    """The uploaded images of a `POST /predict` or `/explain`, in the order sent.

    Raises:
        UploadError: an empty or oversized body, a content type that holds no images, a
            malformed form or JSON body, no images, or more than `max_images`.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limits)
    if not body:
        raise UploadError(400, "the request body is empty; send images as multipart form "
                               "fields named `files`, JSON {\"images\": [base64, ...]} or one "
                               "raw image")
    if kind == "multipart/form-data":
        uploads = await _from_form(request, body, limits)
    elif kind == "application/json":
        uploads = _from_json(body, limits)
    elif kind.startswith(RAW_TYPES):
        uploads = [Upload(request.headers.get("x-filename") or "image 1", body)]
    else:
        raise UploadError(415, f"content type {kind or '(none)'!r} holds no images; use "
                               "multipart/form-data (fields named `files`), application/json "
                               "or an image/* type")
    if not uploads:
        raise UploadError(400, "the request holds no images; send them in fields named `files`")
    if len(uploads) > limits.max_images:
        raise UploadError(413, f"{len(uploads)} images in one request; at most "
                               f"{limits.max_images} (--max-images): split them over requests")
    return uploads


async def _from_form(request: Request, body: bytes, limits: Limits) -> list[Upload]:
    """The `files` fields of a multipart form whose body has been read."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(max_files=limits.max_images + 1,
                                       max_fields=limits.max_images + 100,
                                       max_part_size=limits.max_bytes)
    except Exception as e:  # noqa: BLE001 -- Starlette's parser raises its own kinds
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        if "too many files" in detail.lower():
            raise UploadError(413, f"over {limits.max_images} images in one request "
                                   "(--max-images): split them over requests") from None
        raise UploadError(400, f"the multipart form cannot be read ({detail}); send each image "
                               "as a file field named `files`") from None
    try:
        uploads = []
        for i, item in enumerate(form.getlist("files"), 1):
            if isinstance(item, str):
                raise UploadError(400, f"form field `files` #{i} is text, not a file; send "
                                       "images as file fields")
            uploads.append(Upload(item.filename or f"image {i}", await item.read()))
        if not uploads and form:
            fields = ", ".join(sorted(set(form.keys())))
            raise UploadError(400, f"the form has no field named `files` (it has: {fields}); "
                                   "name each image field `files`")
        return uploads
    finally:
        await form.close()


def _from_json(body: bytes, limits: Limits) -> list[Upload]:
    """{"images": ["<base64>", ...]} or {"images": [{"name": ..., "data": "<base64>"}, ...]}."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise UploadError(400, f"the JSON body cannot be read ({e}); send "
                               "{\"images\": [base64, ...]}") from None
    items = document.get("images") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise UploadError(400, "the JSON body needs a list `images` of base64 strings or "
                               "{\"name\", \"data\"} objects")
    if len(items) > limits.max_images:
        raise UploadError(413, f"{len(items)} images in one request; at most "
                               f"{limits.max_images} (--max-images): split them over requests")
    uploads = []
    for i, item in enumerate(items, 1):
        name, data = (item.get("name"), item.get("data")) if isinstance(item, dict) else (None, item)
        if not isinstance(data, str) or (name is not None and not isinstance(name, str)):
            raise UploadError(400, f"images[{i - 1}]: give a base64 string or "
                                   "{\"name\": ..., \"data\": base64}")
        if "," in data[:100] and data.startswith("data:"):
            data = data.split(",", 1)[1]  # a data: URL
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UploadError(400, f"images[{i - 1}] ({name or f'image {i}'}): not valid "
                                   "base64") from None
        uploads.append(Upload(name or f"image {i}", decoded))
    return uploads
