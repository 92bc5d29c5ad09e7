"""The Files and Batches API's routes: HTTP in, the service (``service.py``) decides, JSON
out in OpenAI's shapes; every refusal is OpenAI's error object."""

from __future__ import annotations

import json
import shutil
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from seqsched.serve.batches.service import Batches
from seqsched.serve.batches.store import MODE
from seqsched.serve.protocol import ApiError

_FORM_OVERHEAD = 64 << 10  # multipart framing around the file's own bytes


def routes(batches: Batches) -> list[Route]:
    async def upload(request: HttpRequest) -> Response:
        limit = batches.limits.max_file_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
            raise ApiError(413, f"the upload ({int(declared):,} bytes) is over this server's limit of {limit:,} "
                           "bytes a file (--max-batch-file-bytes)")  # fmt: skip
        counted = HttpRequest(request.scope, _counting(request.receive, limit + _FORM_OVERHEAD))
        try:
            form = await counted.form(max_files=1, max_fields=8)
        except ApiError:
            raise
        except Exception as e:  # a body that is not multipart/form-data
            raise ApiError(
                400, f"upload a file as multipart/form-data with fields 'file' and 'purpose' ({e})"
            ) from None
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "the form has no 'file' part", "file")
        if not isinstance(purpose, str):
            raise ApiError(400, "the form has no 'purpose' field", "purpose")
        file_id, path = batches.new_file(file.filename or "upload.jsonl", purpose)
        size = _save(file, path, limit)
        return JSONResponse(batches.store.save_file(file_id, file.filename or "upload.jsonl", purpose, size))

    async def list_files(request: HttpRequest) -> Response:
        purpose = request.query_params.get("purpose")
        data = [f for f in batches.store.list_files() if purpose is None or f["purpose"] == purpose]
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def get_file(request: HttpRequest) -> Response:
        return JSONResponse(batches.file(request.path_params["file_id"]))

    async def content(request: HttpRequest) -> Response:
        file_id = request.path_params["file_id"]
        batches.file(file_id)
        return FileResponse(batches.store.file_path(file_id), media_type="application/jsonl")

    async def delete_file(request: HttpRequest) -> Response:
        return JSONResponse(batches.delete_file(request.path_params["file_id"]))

    async def create(request: HttpRequest) -> Response:
        return JSONResponse(await batches.create(await _json_body(request)))

    async def list_batches(request: HttpRequest) -> Response:
        after = request.query_params.get("after")
        limit = request.query_params.get("limit", "20")
        if not limit.isdigit():
            raise ApiError(400, f"limit must be an integer, got {limit!r}", "limit")
        return JSONResponse(batches.list(after, int(limit)))

    async def get_batch(request: HttpRequest) -> Response:
        return JSONResponse(batches.get(request.path_params["batch_id"]))

    async def cancel(request: HttpRequest) -> Response:
        return JSONResponse(await batches.cancel(request.path_params["batch_id"]))

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
        Route("/v1/batches", create, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
    ]


def _counting(receive: Receive, limit: int) -> Receive:
    """``receive``, refusing a body past ``limit`` bytes while it arrives (a chunked upload
    declares no length)."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise ApiError(413, f"the upload is over this server's limit of {limit:,} bytes (--max-batch-file-bytes)")
        return message

    return counted


def _save(file: UploadFile, path: Any, limit: int) -> int:
    """Copy the upload (spooled by the form parser) to the store, owner-only; its size."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    with os.fdopen(fd, "wb") as out:
        file.file.seek(0)
        shutil.copyfileobj(file.file, out, 1 << 20)
        size = out.tell()
    if size > limit:
        os.unlink(path)
        raise ApiError(413, f"the file ({size:,} bytes) is over this server's limit of {limit:,} bytes a file")
    return size


async def _json_body(request: HttpRequest) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
