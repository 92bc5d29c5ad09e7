"""The Files and Batches API's routes: HTTP in, the service (``service.py``) decides, JSON
out in OpenAI's shapes; every refusal is OpenAI's error object."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive

from seqsched.data.atomic import is_disk_full
from seqsched.serve.batches.service import Batches
from seqsched.serve.batches.store import MODE
from seqsched.serve.interactive import read_body
from seqsched.serve.protocol import ApiError

_FORM_OVERHEAD = 64 << 10  # multipart framing around the file's own bytes


def routes(batches: Batches, body_limit: int, body_timeout_s: float) -> list[Route]:
    """``body_limit`` and ``body_timeout_s`` (``--max-request-bytes``, ``--body-timeout``)
    bound a batch's creation; an upload has ``--max-batch-file-bytes`` and the same time."""

    async def upload(request: HttpRequest) -> Response:
        limit = batches.limits.max_file_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
            raise ApiError(413, f"the upload ({int(declared):,} bytes) is over this server's limit of {limit:,} "
                           "bytes a file (--max-batch-file-bytes)")  # fmt: skip
        counted = HttpRequest(request.scope, _counting(request.receive, limit))
        try:
            form = await asyncio.wait_for(counted.form(max_files=1, max_fields=8), body_timeout_s)
        except ApiError:
            raise
        except asyncio.TimeoutError:
            raise ApiError(408, f"the upload did not arrive within {body_timeout_s:g} s (--body-timeout)",
                           kind="timeout") from None  # fmt: skip
        except Exception as e:  # a body that is not multipart/form-data
            cause = _causes(e)
            if "header size" in cause:  # python-multipart's cap on a part's header line
                cause += f": a part's header holds its filename, which may be at most {MAX_FILENAME_CHARS} characters"
            raise ApiError(400, f"upload a file as multipart/form-data with fields 'file' and 'purpose' ({cause})",
                           "file") from None  # fmt: skip
        try:
            return await _store_upload(batches, form, limit)
        finally:
            await form.close()  # the spooled upload's temporary goes now

    async def list_files(request: HttpRequest) -> Response:
        purpose = request.query_params.get("purpose")
        data = [f for f in batches.store.list_files() if purpose is None or f["purpose"] == purpose]
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def get_file(request: HttpRequest) -> Response:
        return JSONResponse(batches.file(request.path_params["file_id"]))

    async def content(request: HttpRequest) -> Response:
        file_id = request.path_params["file_id"]
        batches.file(file_id)
        try:
            fd = batches.store.open_file(file_id)  # never through a link
        except OSError as e:
            raise ApiError(404, f"file {file_id}'s content is not there ({e})", "file_id",
                           kind="not_found_error") from None  # fmt: skip
        return StreamingResponse(_chunks(fd), media_type="application/jsonl")

    async def delete_file(request: HttpRequest) -> Response:
        return JSONResponse(batches.delete_file(request.path_params["file_id"]))

    async def create(request: HttpRequest) -> Response:
        raw = await read_body(request, body_limit, body_timeout_s)
        return JSONResponse(await batches.create(_json(raw)))

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


MAX_FILENAME_CHARS = 255  # a file name on most file systems


async def _store_upload(batches: Batches, form: FormData, limit: int) -> Response:
    file, purpose = form.get("file"), form.get("purpose")
    if not isinstance(file, UploadFile):
        raise ApiError(400, "the form has no 'file' part", "file")
    if not isinstance(purpose, str):
        raise ApiError(400, "the form has no 'purpose' field", "purpose")
    filename = file.filename or "upload.jsonl"
    if len(filename) > MAX_FILENAME_CHARS:
        raise ApiError(400, f"the filename is {len(filename):,} characters, over the limit of {MAX_FILENAME_CHARS}",
                       "file")  # fmt: skip
    file_id, path = batches.new_file(filename, purpose)
    try:
        size = await asyncio.to_thread(_save, file, path, limit)
        return JSONResponse(batches.store.save_file(file_id, filename, purpose, size))
    except OSError as e:  # nothing is left behind
        with contextlib.suppress(OSError):
            os.unlink(path)
        if is_disk_full(e):
            raise ApiError(507, f"the server's disk is full: the file was not stored ({e.strerror})",
                           kind="insufficient_storage") from None  # fmt: skip
        raise ApiError(500, f"the file could not be stored: {e}", kind="internal_error") from None


def _causes(error: BaseException) -> str:
    """An error's message with those of the errors it came from (the form parser's own)."""
    seen: list[str] = []
    at: BaseException | None = error
    while at is not None and len(seen) < 4:
        text = str(getattr(at, "detail", None) or at)
        if text and text not in seen:
            seen.append(text)
        at = at.__cause__ or at.__context__
    return ": ".join(seen)


def _counting(receive: Receive, limit: int) -> Receive:
    """``receive``, refusing a body past ``limit`` bytes of file and form while it arrives
    (a chunked upload declares no length); the form's own framing is allowed on top."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit + _FORM_OVERHEAD:
            raise ApiError(413, f"the upload is over this server's limit of {limit:,} bytes a file "
                           "(--max-batch-file-bytes)")  # fmt: skip
        return message

    return counted


def _save(file: UploadFile, path: Any, limit: int) -> int:
    """Copy the upload (spooled by the form parser) to the store, owner-only; its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    with os.fdopen(fd, "wb") as out:
        file.file.seek(0)
        shutil.copyfileobj(file.file, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    if size > limit:
        os.unlink(path)
        raise ApiError(413, f"the file ({size:,} bytes) is over this server's limit of {limit:,} bytes a file "
                       "(--max-batch-file-bytes)")  # fmt: skip
    return size


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    with os.fdopen(fd, "rb") as f:
        while block := await asyncio.to_thread(f.read, 1 << 20):
            yield block


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
