"""When a running server reloads its index: the store's generation moves at each batch an index run commits,
but the run writes the FAISS file only at its end. Loading a generation whose file exists is cheap (a
memory map); one without a file means rebuilding the index from every stored vector. So a new generation is
loaded

- at once (at most every `interval` seconds) when its FAISS file is there: a run finished;
- when the store has stayed at it for `settle` seconds: a run that ended without its file (killed), or a
  batch that takes long, is searched from a rebuilt index rather than the old one for ever;
- whenever a search is `forced` (it came back short of results while the store has moved on).

Until then the index kept serves, leaving out rows deleted since (`Searcher.search_filtered`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from retrieval.config import SERVE_RELOAD_INTERVAL, SERVE_RELOAD_SETTLE


class ReloadPolicy:
    """Decides whether the generation `served` should give way to the store's `current` one."""

    def __init__(
        self,
        index_file: Callable[[int], Path],
        *,
        interval: float = SERVE_RELOAD_INTERVAL,
        settle: float = SERVE_RELOAD_SETTLE,
    ) -> None:
        self._index_file = index_file
        self.interval, self.settle = interval, settle
        self._loaded_at = float("-inf")
        self._first_seen: tuple[int, float] | None = None
        self._lock = threading.Lock()

    def due(self, served: int, current: int, *, force: bool = False) -> bool:
        if current == served:
            return False
        if force:
            return True
        now = time.monotonic()
        with self._lock:
            if self._first_seen is None or self._first_seen[0] != current:
                self._first_seen = (current, now)
            settled = now - self._first_seen[1] >= self.settle
        if now - self._loaded_at < self.interval:
            return False
        return settled or self._index_file(current).exists()

    def loaded(self) -> None:
        """A reload was just made."""
        self._loaded_at = time.monotonic()
