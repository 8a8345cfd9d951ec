"""`POST /api/uploads`: an image to search by. Size-checked while it streams in, decoded by the indexer's safe
decoder, embedded once by the served model; only its vector is kept (`uploads.Uploads`), never its bytes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from indexer.web.routes_library import service_of
from indexer.web.schemas import UploadOut, errors
from indexer.web.uploads import Upload, Uploads, body_limit, read_upload, too_large
from retrieval.decode import decode_image

router = APIRouter(prefix="/api", tags=["search"])


@router.post(
    "/uploads",
    summary="Upload an image (multipart field `file`) to search by; answers the id a query part's `upload` takes",
    response_model=UploadOut,
    responses=errors(400, 413, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                }
            },
        }
    },
)
async def upload(request: Request) -> dict[str, Any]:
    limit: int = request.app.state.upload_limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit(limit):
        raise too_large(limit)  # plainly too large: refused before reading any of it
    data = await read_upload(request.headers.get("content-type"), request.stream(), limit)
    kept = await run_in_threadpool(_embed, request, data)
    uploads: Uploads = request.app.state.uploads
    return {"upload": uploads.add(kept), "width": kept.width, "height": kept.height}


def _embed(request: Request, data: bytes) -> Upload:
    decoded = decode_image(data, "the uploaded image")
    vector = service_of(request).encode_image(decoded.image)
    return Upload(vector, decoded.info.width, decoded.info.height)
