"""What POST /predict accepts, checked in the HTTP server before anything is queued for the model: one image as the
request body (Content-Type image/..., or application/octet-stream), or image files as multipart/form-data, at most
max_upload_mb in all. Anything else is answered at once with a 4xx whose "detail" says why; the model's workers
never see it. The images are decoded in the workers (api.py)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from starlette.datastructures import UploadFile

MULTIPART = "multipart/form-data"
IMAGE_TYPES = ("image/", "application/octet-stream")  # prefixes: image/jpeg, image/png, image/webp ...
MB = 2**20  # MiB, as nginx's client_max_body_size counts them
BINARY = {"type": "string", "format": "binary"}
# The body as the OpenAPI page (/docs) shows it: the route reads the request itself, so FastAPI cannot infer it.
REQUEST_BODY = {
    "required": True,
    "content": {
        "image/*": {"schema": BINARY},
        "application/octet-stream": {"schema": BINARY},
        MULTIPART: {"schema": {"type": "object", "properties": {"files": {"type": "array", "items": BINARY}}}},
    },
}
HOW = (
    "send one image as the body with its type (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'), "
    "or image files as multipart/form-data (curl -F file=@a.jpg -F file=@b.png)"
)


@dataclass(frozen=True)
class Upload:
    images: list[bytes]  # as uploaded
    listed: bool  # multipart: answered with a list, one entry per file in their order; else with one object


def accept_uploads(app: FastAPI, path: str, max_upload_mb: float) -> None:
    """Set the upload limit of read_upload (app.state: the HTTP server processes share it), and show the request
    body of `path` on the OpenAPI page."""
    app.state.max_upload_bytes = int(max_upload_mb * MB)
    for route in app.routes:
        if getattr(route, "path", None) == path:
            route.openapi_extra = {"requestBody": REQUEST_BODY}


async def read_upload(request: Request) -> Upload:
    """The request's images, or an HTTPException (4xx) saying what is wrong with the request."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != MULTIPART and not media_type.startswith(IMAGE_TYPES):
        raise HTTPException(415, f"Content-Type {media_type or '(none)'} is not an image: {HOW}.")
    body = await read_body(request)
    if media_type != MULTIPART:
        return Upload([body], listed=False)
    return Upload(await form_files(request, body), listed=True)


async def read_body(request: Request) -> bytes:
    """The body within the limit: refused by the length it declares, and again by the bytes actually received (a
    chunked upload declares none)."""
    limit = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(f"{declared} bytes", limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(f"more than {limit} bytes", limit)
    if not body:
        raise HTTPException(400, f"the request has no body: {HOW}.")
    return bytes(body)


def too_large(size: str, limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is {size}, over the limit of max_upload_mb={limit / MB:g}.")


async def form_files(request: Request, body: bytes) -> list[bytes]:
    """The files of a multipart body, in their order (other form fields are ignored). Starlette answers a malformed
    body with 400."""

    async def replay() -> dict:  # the body once more, for the form parser: the request's own stream is read
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    try:
        files = [await value.read() for _, value in form.multi_items() if isinstance(value, UploadFile)]
    finally:
        await form.close()
    if not files:
        raise HTTPException(400, f"multipart/form-data without a file: {HOW}.")
    if empty := [number for number, data in enumerate(files, 1) if not data]:
        raise HTTPException(400, f"file {empty[0]} of {len(files)} is empty.")
    return files
