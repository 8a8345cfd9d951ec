"""Searching: `POST /api/search` (a query's JSON form, `retrieval.query_codec`) and `GET /api/search` (a plain
text query in the URL, words as the CLI takes them: `2:beach`, `-1:people`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from indexer.web.routes_library import service_of
from indexer.web.schemas import SearchIn, SearchOut, errors
from indexer.web.service import Page
from indexer.web.uploads import Uploads
from retrieval.query import text_parts
from retrieval.query_codec import offset_from_json, query_from_json
from retrieval.storage.records import ImageRecord
from retrieval.thumbnails import ThumbnailCache

router = APIRouter(prefix="/api", tags=["search"])

Words = Annotated[list[str], Query()]


def search_json(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Run the query of `body` (its JSON form) and answer with one page of results."""
    uploads: Uploads = request.app.state.uploads
    service = service_of(request)
    query = query_from_json(body, uploads=uploads.vector)
    page = service.search(query, offset_from_json(body))
    return page_json(page, service.thumbnails())


def page_json(page: Page, thumbnails: ThumbnailCache) -> dict[str, Any]:
    return {
        "results": [result_json(result.to_json(), record, thumbnails) for result, record in page.results],
        "offset": page.offset,
        "k": page.k,
        "more": page.more,
        "generation": page.generation,
        "took_ms": round(page.took_ms, 3),
    }


def result_json(data: dict[str, Any], record: ImageRecord | None, thumbnails: ThumbnailCache) -> dict[str, Any]:
    """A result's JSON and where its original and its thumbnail are served; the thumbnail's URL carries its
    version (`?v=`, its ETag), so a browser may keep it for good."""
    image = f"/api/images/{data['id']}"
    return data | {"thumbnail": thumbnail_url(image, record, thumbnails), "image": image}


def thumbnail_url(image: str, record: ImageRecord | None, thumbnails: ThumbnailCache) -> str:
    """`image`'s thumbnail URL, with `?v=` its current ETag unquoted (none without a `record`)."""
    if record is None:
        return f"{image}/thumbnail"
    version = thumbnails.etag(record).strip('"')
    return f"{image}/thumbnail?v={version}"


@router.post(
    "/search",
    summary="Search by a query of weighted parts (texts, indexed images, uploads) with filters, one page",
    response_model=SearchOut,
    responses=errors(400, 404, 503),
)
def search(request: Request, body: SearchIn) -> dict[str, Any]:
    return search_json(request, body.model_dump(exclude_none=True))


class SearchParams:
    """A search's URL parameters other than its words (`k`, `offset`, `sort`, the filters, the cut-offs)."""

    def __init__(
        self,
        k: int | None = None,
        offset: int | None = None,
        sort: str | None = None,
        after: str | None = None,
        before: str | None = None,
        camera: str | None = None,
        within: Words = [],  # noqa: B006 - FastAPI copies defaults
        ext: Words = [],  # noqa: B006
        min_width: int | None = None,
        min_height: int | None = None,
        orientation: str | None = None,
        min_score: float | None = None,
        min_relevance: float | None = None,
        template: str | None = None,
        include_self: bool | None = None,
    ) -> None:
        self.page = {"k": k, "offset": offset, "sort": sort, "min_score": min_score, "min_relevance": min_relevance}
        self.page |= {"template": template, "include_self": include_self}
        given: dict[str, Any] = {
            "within": within,
            "after": after,
            "before": before,
            "camera": camera,
            "extensions": ext,
        }
        given |= {"min_width": min_width, "min_height": min_height, "orientation": orientation}
        self.filter = {key: value for key, value in given.items() if value not in (None, [])}

    def body(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The query's JSON form with these `parts`."""
        return {"parts": parts, "filter": self.filter, **self.page}


Params = Annotated[SearchParams, Depends()]


@router.get(
    "/search",
    summary="Search by words (repeatable `q`, `not`; `W:TEXT` weighs a word as the CLI does), one page",
    response_model=SearchOut,
    responses=errors(400, 503),
)
def search_words(
    request: Request,
    params: Params,
    q: Words = [],  # noqa: B006 - FastAPI copies defaults
    not_: Annotated[list[str], Query(alias="not")] = [],  # noqa: B006
) -> dict[str, Any]:
    parts = [{"text": part.text, "weight": part.weight} for part in text_parts(q, not_)]
    return search_json(request, params.body(parts))
