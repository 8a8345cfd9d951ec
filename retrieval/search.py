"""Query -> vector -> FAISS -> ids -> store rows: text and image search with filters."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.config import DEFAULT_TOP_K, EXACT_SUBSET_MAX
from retrieval.decode import read_and_decode
from retrieval.errors import EmptyLibraryError, InvalidQueryError, UnreadableImageError
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.records import ImageRecord, copy_fields

_WIDEN_FACTOR = 4


@dataclass(frozen=True)
class SearchResult:
    """One hit: its rank and score, and the stored facts a caller is shown (`to_json`)."""

    rank: int
    score: float
    id: int
    path: str
    width: int | None
    height: int | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    size: int

    @classmethod
    def from_record(cls, record: ImageRecord, rank: int, score: float) -> SearchResult:
        """The hit of `record`: each field other than rank and score is the record's field of that name."""
        return copy_fields(cls, record, rank=rank, score=score)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat() if self.taken_at else None
        return data


def apply_template(query: str, template: str | None) -> str:
    """`a photo of {}` + `dog` -> `a photo of dog`; braces in the query itself are left alone."""
    if not query.strip():
        raise InvalidQueryError("the query is empty: give some words to search for")
    if template is None:
        return query
    if "{}" not in template:
        raise InvalidQueryError(f"the template {template!r} has no {{}} where the query goes")
    return template.replace("{}", query.strip())


class Searcher:
    """Searches one library. Loads the FAISS index once; the model only when a query needs encoding."""

    def __init__(self, library: Library, encoder: Encoder | None = None, *, gpu: str = "auto") -> None:
        self.library = library
        self.encoder = encoder or library.encoder()
        library.check_model(self.encoder)
        self.index: VectorIndex = library.load_index(gpu=gpu)

    def search_text(
        self,
        query: str,
        k: int = DEFAULT_TOP_K,
        *,
        template: str | None = None,
        within: str | Path | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        vector = self.encoder.encode_texts([apply_template(query, template)])[0]
        return self.search_vector(vector, k, within=within, min_score=min_score)

    def search_image(
        self,
        image: str | Path,
        k: int = DEFAULT_TOP_K,
        *,
        include_self: bool = False,
        within: str | Path | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """Images similar to the file `image`, indexed or not; the file itself is left out unless asked."""
        vector, own_id = self.image_vector(image)
        exclude = {own_id} if own_id is not None and not include_self else set()
        return self.search_vector(vector, k, within=within, min_score=min_score, exclude_ids=exclude)

    def image_vector(self, image: str | Path) -> tuple[np.ndarray, int | None]:
        """The query image's vector, and its id when it is indexed. An indexed, unchanged file reuses
        its stored vector (no model load); anything else is decoded and encoded."""
        path = os.path.abspath(os.path.expanduser(str(image)))
        row = self.library.store.image_by_path(path)
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise UnreadableImageError(path, f"cannot read query image: {exc.strerror or exc}") from exc
        unchanged = row is not None and (row.size, row.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        if row is not None and unchanged and row.error is None and bool((self.index.ids() == row.id).any()):
            return self.index.reconstruct([row.id])[0], row.id
        _, decoded = read_and_decode(path)
        return self.encoder.encode_images([decoded.image])[0], row.id if row else None

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = DEFAULT_TOP_K,
        *,
        within: str | Path | None = None,
        min_score: float | None = None,
        exclude_ids: set[int] | None = None,
    ) -> list[SearchResult]:
        if len(self.index) == 0:
            raise EmptyLibraryError(f"the library at {self.library.directory} has no indexed images yet")
        if k < 1:
            raise InvalidQueryError(f"k must be at least 1, not {k}")
        exclude = exclude_ids or set()
        allowed = None
        if within is not None:
            allowed = self.library.store.ids_under(os.path.abspath(os.path.expanduser(str(within))))
        scores, ids = self._top(vector.reshape(1, -1), k, allowed, exclude)
        if min_score is not None:
            keep = scores >= min_score
            scores, ids = scores[keep], ids[keep]
        rows = self.library.store.rows_by_ids(ids.tolist())
        results: list[SearchResult] = []
        for score, image_id in zip(scores.tolist(), ids.tolist(), strict=True):
            row = rows.get(image_id)
            if row is not None:
                results.append(SearchResult.from_record(row, len(results) + 1, float(score)))
        return results

    def _top(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, exclude: set[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best k (score, id) pairs that pass the filters, best first."""
        want = k + len(exclude)
        if allowed is not None and len(allowed) <= EXACT_SUBSET_MAX:
            distances, ids = self.index.search_subset(query, want, allowed)
            return _filtered(distances[0], ids[0], None, exclude, k)
        fetch = want
        while True:
            distances, ids = self.index.search(query, min(fetch, len(self.index)))
            scores, kept = _filtered(distances[0], ids[0], allowed, exclude, k)
            if len(kept) >= k or fetch >= len(self.index):
                return scores, kept
            fetch *= _WIDEN_FACTOR


def _filtered(
    scores: np.ndarray, ids: np.ndarray, allowed: np.ndarray | None, exclude: set[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    keep = ids >= 0
    if allowed is not None:
        keep &= np.isin(ids, allowed)
    if exclude:
        keep &= ~np.isin(ids, np.fromiter(exclude, dtype=np.int64))
    return scores[keep][:k], ids[keep][:k]
