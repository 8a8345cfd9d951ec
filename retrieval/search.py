"""Query -> vector -> FAISS -> ids -> store rows: fused text and image queries with filters (`Query`, whose
module documents the fusion rule), chosen by score, cut, then sorted."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from retrieval.config import DEFAULT_MIN_RELEVANCE, DEFAULT_TOP_K
from retrieval.errors import EmptyLibraryError, InvalidQueryError, UnreadableImageError
from retrieval.filters import SearchFilter
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.query import Part, Query, check_min_score, fuse, sort_results
from retrieval.relevance import Calibrator, QueryRelevance
from retrieval.relevance_files import calibrator_for
from retrieval.results import SearchResult


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
        self.index: VectorIndex = library.load_index(gpu=gpu, mmap=True)
        self._calibrator: Calibrator | None = None

    @property
    def calibrator(self) -> Calibrator:
        """The library's relevance calibrator, made on first use (`relevance_files.calibrator_for`)."""
        if self._calibrator is None:
            self._calibrator = calibrator_for(self.library, self.encoder, self.index)
        return self._calibrator

    def search(self, query: Query) -> list[SearchResult]:
        """Run `query`: its parts fused into one vector, the k best by score inside its filter (its own
        images left out unless `include_self`) and above its cutoffs (`min_score`; `min_relevance` for a text
        query, every part text, whose results carry their relevance), in `sort` order."""
        self._check(query.k, query.min_score)
        vector, own_ids = self.query_vector(query)
        own = frozenset[int]() if query.include_self else frozenset(own_ids)
        search_filter = replace(query.filter, exclude=query.filter.exclude | own)
        judge = self.calibrator.query(vector) if query.is_text else None
        floor = _floor(query.min_score, judge, query.min_relevance)
        chosen = self.search_filtered(vector, query.k, search_filter, floor)
        return sort_results(_with_relevance(chosen, judge), query.sort)

    def query_vector(self, query: Query) -> tuple[np.ndarray, set[int]]:
        """The fused vector of `query`'s parts, and the ids of its indexed images. Texts are encoded in one
        batch, each after the query's template."""
        texts = [apply_template(part.text, query.template) for part in query.parts if part.text is not None]
        encoded = iter(self.encoder.encode_texts(texts)) if texts else iter(())
        vectors: list[np.ndarray] = []
        own_ids: set[int] = set()
        for part in query.parts:
            if part.text is not None:
                vectors.append(next(encoded))
                continue
            vector, own_id = self.part_image_vector(part)
            vectors.append(vector)
            if own_id is not None:
                own_ids.add(own_id)
        return fuse(np.stack(vectors), [part.weight for part in query.parts]), own_ids

    def part_image_vector(self, part: Part) -> tuple[np.ndarray, int | None]:
        """An image part's vector and its id when indexed: a file's (`image_vector`), a given `vector`, or an
        id's stored one."""
        if part.image is not None:
            return self.image_vector(part.image)
        if part.vector is not None:
            vector = np.asarray(part.vector, dtype=np.float32).reshape(-1)
            if len(vector) != self.index.dim:
                raise InvalidQueryError(
                    f"a `vector` part has {len(vector)} dimensions, the library's model {self.index.dim}",
                    parameters=("vector",),
                )
            return vector, None
        assert part.image_id is not None
        if not self.index.contains(part.image_id):
            raise InvalidQueryError(
                f"`image_id` {part.image_id} is not an indexed image of this library", parameters=("image_id",)
            )
        return self.index.reconstruct([part.image_id])[0], part.image_id

    def search_text(
        self,
        query: str,
        k: int = DEFAULT_TOP_K,
        *,
        template: str | None = None,
        within: str | Path | None = None,
        min_score: float | None = None,
        search_filter: SearchFilter | None = None,
        min_relevance: float | None = DEFAULT_MIN_RELEVANCE,
    ) -> list[SearchResult]:
        """The one-text query: `search(Query.of_text(...))`, inside `search_filter` and `within`, its results at
        least `min_relevance` relevant (None or 0: any)."""
        chosen = SearchFilter.of(within=within).both(search_filter)
        options = {"min_score": min_score, "min_relevance": min_relevance}
        return self.search(Query.of_text(query, k=k, template=template, filter=chosen, **options))

    def search_image(
        self,
        image: str | Path,
        k: int = DEFAULT_TOP_K,
        *,
        include_self: bool = False,
        within: str | Path | None = None,
        min_score: float | None = None,
        search_filter: SearchFilter | None = None,
    ) -> list[SearchResult]:
        """Images similar to the file `image`, indexed or not; the file itself is left out unless asked."""
        chosen = SearchFilter.of(within=within).both(search_filter)
        query = Query.of_image(image, k=k, include_self=include_self, filter=chosen, min_score=min_score)
        return self.search(query)

    def image_vector(self, image: str | Path) -> tuple[np.ndarray, int | None]:
        """The query image's vector, and its id when it is indexed. An indexed, unchanged file reuses
        its stored vector (no model load); anything else is decoded and encoded."""
        path = os.path.abspath(os.path.expanduser(str(image)))
        row = self.library.reads.image_by_path(path)
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise UnreadableImageError(path, f"cannot read query image: {exc.strerror or exc}") from exc
        unchanged = row is not None and (row.size, row.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        if row is not None and unchanged and row.error is None and self.index.contains(row.id):
            return self.index.reconstruct([row.id])[0], row.id
        from retrieval.decode import read_and_decode  # Pillow and the decoders: image queries only

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
        search_filter: SearchFilter | None = None,
    ) -> list[SearchResult]:
        """The best k images for `vector` inside `search_filter` and `within`, less `exclude_ids`."""
        self._check(k, min_score)
        chosen = SearchFilter.of(within=within, exclude_ids=exclude_ids).both(search_filter)
        return self.search_filtered(vector, k, chosen, min_score)

    def _check(self, k: int, min_score: float | None) -> None:
        """What every search refuses before it encodes anything: an empty library, k < 1, a bad `min_score`."""
        if len(self.index) == 0:
            raise EmptyLibraryError(f"the library at {self.library.directory} has no indexed images yet")
        if k < 1:
            raise InvalidQueryError(f"`k` must be at least 1, not {k}", parameters=("k",))
        check_min_score(min_score)

    def search_filtered(
        self, vector: np.ndarray, k: int, search_filter: SearchFilter, min_score: float | None = None
    ) -> list[SearchResult]:
        """The best k images that pass `search_filter` (and score at least `min_score`), best first.

        The filter is applied inside faiss. The index was loaded before the rows are read, so a row deleted
        meanwhile (an index run removing images) is left out and the next candidates fill its place: k
        results come back whenever k images pass."""
        id_filter = search_filter.resolve(self.library.reads)
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        while True:
            scores, ids = self.index.search(query, k, id_filter)
            keep = ids[0] >= 0
            if min_score is not None:
                keep &= scores[0] >= min_score
            hits = list(zip(scores[0][keep].tolist(), ids[0][keep].tolist(), strict=True))
            rows = self.library.reads.rows_by_ids(image_id for _, image_id in hits)
            gone = [image_id for _, image_id in hits if image_id not in rows or not rows[image_id].has_vector]
            if not gone:
                return [
                    SearchResult.from_record(rows[image_id], rank, score)
                    for rank, (score, image_id) in enumerate(hits, start=1)
                ]
            id_filter = id_filter.excluding(gone)


def _floor(min_score: float | None, judge: QueryRelevance | None, min_relevance: float | None) -> float | None:
    """The cosine floor of a search: `min_score`, raised to the query's own cosine for `min_relevance`."""
    if judge is None or not min_relevance:
        return min_score
    floor = judge.min_score(min_relevance)
    return floor if min_score is None else max(min_score, floor)


def _with_relevance(results: list[SearchResult], judge: QueryRelevance | None) -> list[SearchResult]:
    if judge is None:
        return results
    relevance = judge.relevance(np.array([result.score for result in results])).tolist()
    return [replace(result, relevance=value) for result, value in zip(results, relevance, strict=True)]
