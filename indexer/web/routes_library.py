"""The library as a whole: `GET /api/status` (cheap, never loads the model), `GET /api/info`, and
`GET /api/duplicates`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from indexer.web.schemas import DuplicatesOut, InfoOut, StatusOut, errors
from indexer.web.service import Service
from retrieval.config import DEFAULT_DUPLICATE_THRESHOLD, SERVE_DUPLICATE_GROUPS
from retrieval.duplicates import summary
from retrieval.errors import InvalidQueryError
from retrieval.query_codec import check_folders

router = APIRouter(prefix="/api", tags=["library"])


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get(
    "/status",
    summary="Whether the server is ready, and which library and generation it serves",
    response_model=StatusOut,
    responses=errors(503),
)
def status(request: Request) -> dict[str, Any]:
    return service_of(request).status()


@router.get(
    "/info",
    summary="The library's facts (`clipsearch info --json`), the camera names and the indexed folders",
    response_model=InfoOut,
    responses=errors(503),
)
def info(request: Request) -> dict[str, Any]:
    library = service_of(request).library()
    facts = library.facts().to_json()
    return facts | {"cameras": library.reads.camera_names(), "roots": library.store.root_paths()}


@router.get(
    "/duplicates",
    summary="Groups of near-duplicate images, best copy first (kept per generation and threshold)",
    response_model=DuplicatesOut,
    responses=errors(400, 503),
)
def duplicates(
    request: Request,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    within: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    limit: int = SERVE_DUPLICATE_GROUPS,
) -> dict[str, Any]:
    if limit < 0:
        raise InvalidQueryError(f"`limit` must be 0 or more, not {limit}", parameters=("limit",))
    check_folders(within)
    groups = service_of(request).duplicates(threshold, tuple(within))
    count, images, reclaimable = summary(groups)
    shown = groups[:limit]
    return {
        "groups": [group.to_json() for group in shown],
        "summary": {"groups": count, "images": images, "reclaimable_bytes": reclaimable, "shown": len(shown)}
        | {"threshold": threshold},
    }
