"""The server's warm state: one library opened for reading, one encoder, one `Searcher`, loaded once and kept.

Every search first reads the store's generation (one small query). When an index run has committed since the
searcher was made, a new `Searcher` over the new generation's index is built (one at a time) and swapped in
when `reloads` says it is due (indexer/web/reloads.py); requests already running keep the one they took.
Meanwhile the searcher it has leaves out rows deleted since it loaded (`Searcher.search_filtered` never returns
a row that is gone, and fills its place), and a search that comes back short while the store has moved on
reloads at once and searches again, so a page is never short of images that exist and pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.web.reads import locked
from indexer.web.reloads import ReloadPolicy
from retrieval.config import (
    DATABASE_FILE,
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    SERVE_DUPLICATE_CACHE_SIZE,
    SERVE_MAX_RESULTS,
    SERVE_RELOAD_INTERVAL,
    SERVE_RELOAD_SETTLE,
)
from retrieval.errors import EmptyLibraryError, InvalidQueryError, UnknownImageError
from retrieval.library import Library
from retrieval.query import Query, sort_results
from retrieval.thumbnails import ThumbnailCache

if TYPE_CHECKING:
    import numpy as np

    from retrieval.duplicates import DuplicateGroup
    from retrieval.model.encoder import Encoder
    from retrieval.search import Searcher, SearchResult
    from retrieval.storage.records import ImageRecord

log = logging.getLogger("clipsearch.serve")

_LARGEST_ID = 2**63 - 1  # the store's ids are 64-bit: a larger one names no image (and SQLite could not take it)
THUMBNAIL_CHUNK = 64
"""Thumbnails `prepare_thumbnails` makes between two looks at its stop signal."""
SEARCH_ATTEMPTS = 3
"""Searches of one request at most: the first, then again after a forced reload while the store moves on."""


@dataclass(frozen=True)
class Warm:
    """A searcher and the store generation it was made at."""

    searcher: Searcher
    generation: int


@dataclass(frozen=True)
class Page:
    """One page of a search: its results (with their stored rows), where it starts, whether more may follow."""

    results: list[tuple[SearchResult, ImageRecord | None]]
    offset: int
    k: int
    more: bool
    generation: int
    took_ms: float


def server_version() -> str:
    try:
        return version("clipsearch")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class Service:
    """One library served: opened on first use (`library`), the model and index loaded by `warm` (or by the
    first search), then kept. Safe to share between request threads."""

    def __init__(
        self,
        directory: Path,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        database_url: str | None = None,
        device: str = DEFAULT_DEVICE,
        backend: str = DEFAULT_BACKEND,
        precision: str = "auto",
        reload_interval: float = SERVE_RELOAD_INTERVAL,
        reload_settle: float = SERVE_RELOAD_SETTLE,
    ) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self._model, self._pretrained, self._database_url = model, pretrained, database_url
        self._encoder_options: dict[str, Any] = {"device": device, "backend": backend, "precision": precision}
        self.reloads = ReloadPolicy(self._index_file, interval=reload_interval, settle=reload_settle)
        self._open_lock = threading.Lock()  # opening (and dropping) the library: never held for long
        self._load_lock = threading.RLock()  # loading the model, building and swapping the searcher
        self._library: Library | None = None
        self._encoder: Encoder | None = None
        self._warm: Warm | None = None
        self._thumbnails: ThumbnailCache | None = None
        self._duplicates: dict[tuple[int, float, tuple[str, ...]], list[DuplicateGroup]] = {}
        self._duplicates_lock = threading.Lock()

    # --- the library ---------------------------------------------------------------------------
    def library(self) -> Library:
        """The library, opened for reading on first use. A SQLite library whose file has gone since is
        dropped (`LibraryNotFoundError`), and opened afresh when it is back."""
        with self._open_lock:
            gone = self._database_url is None and not (self.directory / DATABASE_FILE).exists()
            if self._library is not None and gone:
                self._drop()
            if self._library is None:
                library = Library(self.directory, database_url=self._database_url, reading=True)
                library.reads = locked(library.reads)
                library.store  # noqa: B018 - opened now, not raced for by two request threads later
                self._library = library
                self._thumbnails = ThumbnailCache(library.directory, library=library)
            return self._library

    def _drop(self) -> None:
        library, self._library, self._encoder, self._warm = self._library, None, None, None
        thumbnails, self._thumbnails = self._thumbnails, None
        if thumbnails is not None:
            thumbnails.close()
        if library is not None:
            library.close()

    def thumbnails(self) -> ThumbnailCache:
        """The library's thumbnail cache (`retrieval.thumbnails`)."""
        self.library()
        thumbnails = self._thumbnails
        assert thumbnails is not None
        return thumbnails

    def record(self, image_id: int) -> ImageRecord:
        """The stored row of `image_id`, indexed or failed; `UnknownImageError` when there is none."""
        in_range = 0 < image_id <= _LARGEST_ID
        record = self.library().reads.rows_by_ids([image_id]).get(image_id) if in_range else None
        if record is None:
            raise UnknownImageError(f"no image has the id {image_id} (`image_id`)", parameters=("image_id",))
        return record

    def close(self) -> None:
        with self._open_lock:
            self._drop()

    @property
    def ready(self) -> bool:
        """The model and an index are loaded: a search answers without loading anything."""
        return self._warm is not None

    def status(self) -> dict[str, Any]:
        """What `GET /api/status` shows; reads a few counts, never loads the model."""
        library = self.library()
        stats = library.reads.stats(0)
        warm = self._warm
        return {
            "ready": warm is not None,
            "library": str(library.directory),
            "library_id": library.library_id(),
            "generation": warm.generation if warm else None,
            "store_generation": stats.generation,
            "images": stats.indexed,
            "failed": stats.failed,
            "model": library.recorded_description(),
            "dim": library.dim(),
            "server": {"pid": os.getpid(), "version": server_version()},
        }

    # --- the model and the searcher --------------------------------------------------------------
    def encoder(self) -> Encoder:
        """The encoder of the chosen model (`model`/`pretrained`, else the library's), loaded once."""
        with self._load_lock:
            library = self.library()
            if self._encoder is None:
                spec = library.model_for(self._model, self._pretrained)
                encoder = library.encoder(spec, **self._encoder_options)
                encoder.load()
                self._encoder = encoder
            return self._encoder

    def warm(self) -> Warm:
        """Load the model and the index now (what `clipsearch serve` does before it listens), and log it."""
        started = time.perf_counter()
        warm = self.current()
        if len(warm.searcher.index):
            warm.searcher.calibrator  # noqa: B018 - the relevance statistics, made once
        log.info(
            "clipsearch: %s and the index of %d images (generation %d) loaded in %.1f s",
            self.encoder().identity.description,
            len(warm.searcher.index),
            warm.generation,
            time.perf_counter() - started,
        )
        return warm

    def current(self, *, force: bool = False) -> Warm:
        """The searcher to use now: the one kept, unless the store has moved on since it was made (and the last
        reload is `reload_interval` old, or `force`)."""
        library = self.library()
        warm = self._warm
        if warm is not None and not self._stale(warm, library, force):
            return warm
        with self._load_lock:
            warm = self._warm
            library = self.library()
            if warm is None or self._stale(warm, library, force):
                warm = self._load(library)
            return warm

    def _stale(self, warm: Warm, library: Library, force: bool) -> bool:
        return self.reloads.due(warm.generation, library.reads.generation(), force=force)

    def _index_file(self, generation: int) -> Path:
        return self.library().index_path(generation)

    def refresh(self) -> None:
        """Reload the index if it is due (`reloads`), so that the status catches up with index runs while no
        search comes; nothing before the first load."""
        if self._warm is not None:
            self.current()

    def _load(self, library: Library) -> Warm:
        from retrieval.search import Searcher

        encoder = self.encoder()
        generation = library.reads.generation()
        warm = Warm(Searcher(library, encoder, gpu="never"), generation)
        self._warm = warm
        self.reloads.loaded()
        return warm

    def duplicates(self, threshold: float, within: tuple[str, ...]) -> list[DuplicateGroup]:
        """`find_duplicates` of the library, kept per store generation, `threshold` and `within` (it ranges
        over every image: too costly to repeat for each page view)."""
        from retrieval.duplicates import check_threshold, find_duplicates

        check_threshold(threshold)
        library = self.library()
        key = (library.reads.generation(), threshold, within)
        with self._duplicates_lock:
            if key not in self._duplicates:
                self._duplicates[key] = find_duplicates(library, threshold, within=list(within) or None)
                while len(self._duplicates) > SERVE_DUPLICATE_CACHE_SIZE:
                    self._duplicates.pop(next(iter(self._duplicates)))
            return self._duplicates[key]

    def prepare_thumbnails(self, stop: threading.Event) -> None:
        """Make the thumbnails of every indexed image not cached yet, a chunk at a time until done or `stop` is
        set (what a server started with `prepare_thumbnails` runs in the background); logs what it did."""
        ids = self.current().searcher.index.ids().tolist()
        made = cached = failed = 0
        for start in range(0, len(ids), THUMBNAIL_CHUNK):
            if stop.is_set():
                break
            report = self.thumbnails().prepare(ids[start : start + THUMBNAIL_CHUNK], workers=1)
            made, cached, failed = made + report.made, cached + report.cached, failed + len(report.failed)
        log.info("clipsearch: thumbnails made %d, already cached %d, not made %d", made, cached, failed)

    # --- searching ------------------------------------------------------------------------------
    def search(self, query: Query, offset: int = 0) -> Page:
        """Results `offset` to `offset + k` of `query` by score (`Searcher.search` chooses the best `offset + k`),
        that page in `query.sort` order, ranks counted from `offset + 1`."""
        started = time.perf_counter()
        check_page(query.k, offset)
        wanted = replace(query, k=offset + query.k, sort="relevance")
        found: list[SearchResult] = []
        for attempt in range(SEARCH_ATTEMPTS):
            warm = self.current(force=attempt > 0)
            try:
                found = warm.searcher.search(wanted)
            except EmptyLibraryError:
                found = []
            if len(found) >= wanted.k or warm.generation == self.library().reads.generation():
                break
        page = sort_results(found[offset:], query.sort)
        page = [replace(result, rank=result.rank + offset) for result in page]
        rows = self.library().reads.rows_by_ids(result.id for result in page)
        return Page(
            results=[(result, rows.get(result.id)) for result in page],
            offset=offset,
            k=query.k,
            more=len(found) >= wanted.k,
            generation=warm.generation,
            took_ms=(time.perf_counter() - started) * 1000,
        )

    def encode_image(self, pixels: Any) -> np.ndarray:
        """The unit vector of one decoded image (a PIL image), by the served model."""
        return self.encoder().encode_images([pixels])[0]


def check_page(k: int, offset: int) -> None:
    """A page is 1 to SERVE_MAX_RESULTS results deep, counting the `offset` before it."""
    if k < 1:
        raise InvalidQueryError(f"`k` must be at least 1, not {k}", parameters=("k",))
    if offset < 0:
        raise InvalidQueryError(f"`offset` must be 0 or more, not {offset}", parameters=("offset",))
    if offset + k > SERVE_MAX_RESULTS:
        raise InvalidQueryError(
            f"`offset` + `k` is {offset + k}, more than the {SERVE_MAX_RESULTS} results a search ranks: "
            "narrow the query with a filter instead",
            parameters=("offset", "k"),
        )
