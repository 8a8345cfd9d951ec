"""A SQLite store shared by threads (a server's request threads read rows through it): each call gets a
connection of its own from the pool. The engine used to get SQLAlchemy's in-memory pool (its URL names no file),
which keeps five per-thread connections and closes others' while they are in use: errors, then a segfault."""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory
from tests.indexer.web.conftest import build_library


def test_twelve_threads_read_one_store_at_once(tmp_path: Path, tiny_encoder: Encoder) -> None:
    photos = imagefactory.photo_folder(tmp_path / "photos", top=3)
    errors: list[str] = []
    with Library(build_library(tmp_path / "library", tiny_encoder, [photos]), reading=True) as library:
        store = library.store
        expected = (store.rows_by_ids([1, 2, 3]), store.root_paths())

        def reader() -> None:
            for _ in range(100):
                try:
                    assert (store.rows_by_ids([1, 2, 3]), store.root_paths()) == expected
                except Exception as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=reader) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
