"""The full store shared by many threads, as a server's request threads share it.

A SQLite file's engine once took SQLAlchemy's SingletonThreadPool (the pool of a `sqlite://` URL), which closes
other threads' connections once more than five threads have one, while those threads are still using them:
`clipsearch serve` crashed inside libsqlite3 (a segmentation fault) as soon as a page asked for a grid of
thumbnails. The reads run in a fresh interpreter, so that a crash fails this test instead of the whole run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory
from tests.fresh import run_python

THREADS, READS = 16, 150

HAMMER = f"""
import sys, threading
from retrieval.library import Library

library = Library(sys.argv[1], reading=True)
ids = [int(value) for value in sys.argv[2:]]
failures = []

def read():
    try:
        for number in range({READS}):
            wanted = ids[number % len(ids)]
            assert library.store.rows_by_ids([wanted])[wanted].id == wanted
    except Exception as error:
        failures.append(repr(error))

threads = [threading.Thread(target=read) for _ in range({THREADS})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("failures:", failures[:3])
"""


@pytest.mark.slow
def test_many_threads_read_the_store_at_once(tmp_path: Path, tiny_encoder: Encoder) -> None:
    photos = imagefactory.photo_folder(tmp_path / "photos")
    with Library(tmp_path / "library", create=True) as library:
        index_folders(library, tiny_encoder, [str(photos)], workers=1)
        ids = [str(record.id) for record in library.store.file_states_under(str(photos)).values()]
    finished = run_python(HAMMER, str(tmp_path / "library"), *ids)
    assert finished.returncode == 0, (finished.returncode, finished.stderr[-2000:])
    assert finished.stdout.strip() == "failures: []"
