"""The API's request and reply shapes as pydantic models: what `/openapi.json` describes and FastAPI checks.
A search body is then read by `retrieval.query_codec` (the one reading of a query's JSON form)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval.config import DEFAULT_TOP_K


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PartIn(_Strict):
    """One part of a query: exactly one of `text`, `image_id` and `upload`, with a weight (negative: away)."""

    text: str | None = Field(None, description="Words to search for, taken as written.", examples=["a dog"])
    image_id: int | None = Field(None, description="An indexed image's id: search by its stored vector.")
    upload: str | None = Field(None, description="An id that `POST /api/uploads` returned.")
    weight: float | None = Field(None, description="The part's weight (default 1; never 0; negative: away).")


class FilterIn(_Strict):
    """Which images may come back; every condition given must pass."""

    within: list[str] | str | None = Field(None, description="Absolute folders (images under any of them).")
    after: str | None = Field(None, description="Dated from this on: 2021, 2021-06, 2021-06-15 or an ISO time.")
    before: str | None = Field(None, description="Dated before this (same forms as `after`).")
    camera: str | None = Field(None, description="Camera make or model holds this text (any case).")
    extensions: list[str] | str | None = Field(None, description='File extensions, e.g. ["jpg", "png"].')
    min_width: int | None = Field(None, description="At least this many pixels wide.")
    min_height: int | None = Field(None, description="At least this many pixels high.")
    orientation: Literal["landscape", "portrait", "square"] | None = None
    exclude_ids: list[int] | None = Field(None, description="Ids never to return.")


class SearchIn(_Strict):
    """A query (`retrieval.query_codec`'s JSON form): only `parts` is required."""

    parts: list[PartIn] = Field(description="The query's parts, fused by weight (see `retrieval.query`).")
    k: int | None = Field(None, description=f"Results per page (default {DEFAULT_TOP_K}).")
    offset: int | None = Field(None, description="How many of the best results come before this page.")
    filter: FilterIn | None = None
    min_score: float | None = Field(None, description="Leave out results scoring below this cosine (-1..1).")
    min_relevance: float | None = Field(
        None, description="Relevance cutoff 0..1 for a text-only query (null: the default; 0: off)."
    )
    sort: Literal["relevance", "score", "date", "-date"] | None = Field(
        None, description="Order of the page: by score (relevance, score), oldest (date) or newest (-date) first."
    )
    template: str | None = Field(None, description="A prompt template for each text, e.g. 'a photo of {}'.")
    include_self: bool | None = Field(None, description="Keep the query's own images in the results.")


class ResultOut(BaseModel):
    """One hit: `SearchResult.to_json()` and where its thumbnail and image are served."""

    rank: int
    score: float
    relevance: float | None = Field(description="0..1 for a text-only query, else null.")
    id: int
    path: str
    width: int | None
    height: int | None
    taken_at: str | None
    camera_make: str | None
    camera_model: str | None
    size: int
    mtime_ns: int
    thumbnail: str = Field(description="URL of the cached JPEG thumbnail.")
    image: str = Field(description="URL of the original file.")


class SearchOut(BaseModel):
    results: list[ResultOut]
    offset: int
    k: int
    more: bool = Field(description="Another page may exist.")
    generation: int = Field(description="The store generation of the index searched.")
    took_ms: float


class ServerOut(BaseModel):
    pid: int
    version: str


class StatusOut(BaseModel):
    ready: bool = Field(description="The model and the index are loaded.")
    library: str
    library_id: str | None
    generation: int | None = Field(description="The generation served (null until loaded).")
    store_generation: int
    images: int
    failed: int
    model: str | None
    dim: int | None
    server: ServerOut


class UploadOut(BaseModel):
    upload: str = Field(description="The id to use in a query part's `upload`.")
    width: int
    height: int


class RecordOut(BaseModel):
    """What the library stored about one image (indexed, or failed with its `error`)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None = Field(description="EXIF date taken (local time, no zone).")
    camera_make: str | None
    camera_model: str | None
    has_vector: bool = Field(description="Indexed: it can be searched (else `error` says why not).")
    error: str | None
    indexed_at: str
    image: str
    thumbnail: str


class InfoOut(BaseModel):
    """`clipsearch info --json`, plus what the filters can take."""

    model_config = ConfigDict(extra="allow")

    library: str
    model: str | None
    indexed: int
    failed: int
    generation: int
    cameras: list[str] = Field(description="The camera names the `camera` filter can match.")
    roots: list[str] = Field(description="The indexed folders (the `within` filter takes these or folders under them).")


class DuplicatesOut(BaseModel):
    groups: list[dict[str, Any]] = Field(description="`DuplicateGroup.to_json()`: members, best copy first.")
    summary: dict[str, Any] = Field(description="groups, images, reclaimable_bytes (all groups), shown, threshold.")


class ErrorBody(BaseModel):
    type: str = Field(description="The error's class, e.g. InvalidQueryError.")
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of an endpoint that may answer with these error codes."""
    return {code: {"model": ErrorOut} for code in codes}
