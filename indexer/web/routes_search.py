"""Searching: `POST /api/search` (a query's JSON form, `retrieval.query_codec`) and `GET /api/search` (a plain
text query in the URL, words as the CLI takes them: `2:beach`, `-1:people`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from indexer.web.routes_library import service_of
from indexer.web.schemas import SearchIn, SearchOut, errors
from indexer.web.service import Page
from indexer.web.uploads import Uploads
from retrieval.query import text_parts
from retrieval.query_codec import offset_from_json, query_from_json

router = APIRouter(prefix="/api", tags=["search"])

Words = Annotated[list[str], Query()]


def search_json(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Run the query of `body` (its JSON form) and answer with one page of results."""
    uploads: Uploads = request.app.state.uploads
    query = query_from_json(body, uploads=uploads.vector)
    page = service_of(request).search(query, offset_from_json(body))
    return page_json(page)


def page_json(page: Page) -> dict[str, Any]:
    return {
        "results": [result_json(result.to_json(), record) for result, record in page.results],
        "offset": page.offset,
        "k": page.k,
        "more": page.more,
        "generation": page.generation,
        "took_ms": round(page.took_ms, 3),
    }


def result_json(data: dict[str, Any], record: Any) -> dict[str, Any]:
    """A result's JSON and where its thumbnail (`?v=` its version: cached for good) and original are served."""
    version = (record.content_hash or "")[:16] if record is not None else ""
    image = f"/api/images/{data['id']}"
    return data | {"thumbnail": f"{image}/thumbnail?v={version}", "image": image}


@router.post(
    "/search",
    summary="Search by a query of weighted parts (texts, indexed images, uploads) with filters, one page",
    response_model=SearchOut,
    responses=errors(400, 404, 503),
)
def search(request: Request, body: SearchIn) -> dict[str, Any]:
    return search_json(request, body.model_dump(exclude_none=True))


def filter_json(**given: Any) -> dict[str, Any]:
    """A filter's JSON form from URL parameters (those left out or empty are not conditions)."""
    return {key: value for key, value in given.items() if value not in (None, [])}


@router.get(
    "/search",
    summary="Search by words (repeatable `q`, `not`; `W:TEXT` weighs a word as the CLI does), one page",
    response_model=SearchOut,
    responses=errors(400, 503),
)
def search_words(
    request: Request,
    q: Words = [],  # noqa: B006 - FastAPI copies defaults
    not_: Annotated[list[str], Query(alias="not")] = [],  # noqa: B006
    k: int | None = None,
    offset: int | None = None,
    sort: str | None = None,
    after: str | None = None,
    before: str | None = None,
    camera: str | None = None,
    within: Words = [],  # noqa: B006
    ext: Words = [],  # noqa: B006
    min_width: int | None = None,
    min_height: int | None = None,
    orientation: str | None = None,
    min_score: float | None = None,
    min_relevance: float | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    parts = [{"text": part.text, "weight": part.weight} for part in text_parts(q, not_)]
    chosen = filter_json(
        within=within,
        after=after,
        before=before,
        camera=camera,
        extensions=ext,
        min_width=min_width,
        min_height=min_height,
        orientation=orientation,
    )
    body: dict[str, Any] = {"parts": parts, "k": k, "offset": offset, "sort": sort, "filter": chosen}
    body |= {"min_score": min_score, "min_relevance": min_relevance, "template": template}
    return search_json(request, body)
