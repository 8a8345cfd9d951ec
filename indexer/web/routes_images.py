"""Images by id, and only by id: the original file (`served_files.served_path`: inside the library's roots,
unchanged since indexing, a regular file), its cached thumbnail (`retrieval.thumbnails`), its stored record,
and "more like this". No endpoint takes a path."""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from indexer.web.routes_library import service_of
from indexer.web.routes_search import Params, search_json, thumbnail_url
from indexer.web.schemas import RecordOut, SearchOut, errors
from retrieval.config import SERVE_IMAGE_MAX_AGE
from retrieval.errors import FileNotServedError
from retrieval.served_files import served_path, served_record
from retrieval.storage.records import ImageRecord

router = APIRouter(prefix="/api/images", tags=["images"])

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
_CHUNK = 256 * 1024


def _not_modified(request: Request, etag: str) -> bool:
    asked = request.headers.get("if-none-match")
    return asked is not None and (asked.strip() == "*" or etag in [tag.strip() for tag in asked.split(",")])


@router.get(
    "/{image_id}",
    summary="The original file of an image (only a file the library indexed, unchanged, inside its roots)",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, **errors(404, 503)},
)
def original(request: Request, image_id: int) -> Response:
    service = service_of(request)
    record, path = served_path(service.library(), image_id)
    etag = f'"{record.content_hash or record.id}-{record.size}-{record.mtime_ns}"'
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={SERVE_IMAGE_MAX_AGE}"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    handle = _open_checked(record, path)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers["Content-Length"] = str(record.size)
    headers["X-Content-Type-Options"] = "nosniff"
    return StreamingResponse(_chunks(handle), media_type=media_type, headers=headers)


def _open_checked(record: ImageRecord, path: Path) -> BinaryIO:
    """`path` opened without following a link at its end, and checked again through the open descriptor: a
    regular file of the size and mtime indexed (so a file swapped since `served_path` checked it is refused)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise FileNotServedError(
            f"the file of image {record.id} ({record.path}) is not served: {exc.strerror}"
        ) from exc
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (record.size, record.mtime_ns):
        os.close(descriptor)
        raise FileNotServedError(
            f"the file of image {record.id} ({record.path}) is not served: it changed since it was checked"
        )
    return os.fdopen(descriptor, "rb")


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


@router.get(
    "/{image_id}/thumbnail",
    summary="The image's JPEG thumbnail, made once and cached in the library (immutable when `v` is current)",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, **errors(404, 503)},
)
def thumbnail(request: Request, image_id: int, v: str | None = None) -> Response:
    service = service_of(request)
    record = served_record(service.library(), image_id)
    etag = service.thumbnails().etag(record)
    cache = IMMUTABLE if v == etag.strip('"') else REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    path = service.thumbnails().path_for(record)
    return FileResponse(path, media_type="image/jpeg", headers=headers)


@router.get(
    "/{image_id}/details",
    summary="What the library stored about an image: path, size, dates, dimensions, camera, hash, error",
    response_model=RecordOut,
    responses=errors(404, 503),
)
def details(request: Request, image_id: int) -> dict[str, Any]:
    service = service_of(request)
    record = service.record(image_id)
    data = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in asdict(record).items()}
    image = f"/api/images/{record.id}"
    return data | {"image": image, "thumbnail": thumbnail_url(image, record, service.thumbnails())}


@router.get(
    "/{image_id}/similar",
    summary="More like this: the images nearest to an indexed image (itself left out), with the search's filters",
    response_model=SearchOut,
    responses=errors(400, 404, 503),
)
def similar(request: Request, image_id: int, params: Params) -> dict[str, Any]:
    served_record(service_of(request).library(), image_id)  # 404 for an unknown id or a failed row
    return search_json(request, params.body([{"image_id": image_id}]))
