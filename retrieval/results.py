"""One search hit as callers see it (`SearchResult`), in a module of its own: what prints results (the CLI,
a search answered by a running server) needs it without the search machinery (faiss, the encoder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from retrieval.storage.records import ImageRecord, copy_fields


@dataclass(frozen=True)
class SearchResult:
    """One hit: its rank, score (cosine) and relevance (`retrieval.relevance`, in [0, 1]; None for a query with
    image parts, which it is not calibrated for), and the stored facts a caller is shown (`to_json`)."""

    rank: int
    score: float
    relevance: float | None
    id: int
    path: str
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    size: int
    mtime_ns: int

    @classmethod
    def from_record(cls, record: ImageRecord, rank: int, score: float, relevance: float | None = None) -> SearchResult:
        """The hit of `record`: each field other than rank, score and relevance is the record's of that name."""
        return copy_fields(cls, record, rank=rank, score=score, relevance=relevance)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        return data

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SearchResult:
        """The inverse of `to_json` (keys it does not write, such as a served hit's links, are ignored)."""
        taken_at = item["taken_at"]
        return cls(
            rank=int(item["rank"]),
            score=float(item["score"]),
            relevance=None if item["relevance"] is None else float(item["relevance"]),
            id=int(item["id"]),
            path=str(item["path"]),
            width=item["width"],
            height=item["height"],
            taken_at=None if taken_at is None else datetime.fromisoformat(taken_at),
            camera_make=item["camera_make"],
            camera_model=item["camera_model"],
            size=int(item["size"]),
            mtime_ns=int(item["mtime_ns"]),
        )
