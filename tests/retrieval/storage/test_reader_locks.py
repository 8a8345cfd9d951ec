"""A long-lived `StoreReader` (a server's) keeps seeing what other processes commit after this process opens the
same library again (another reader, the full store): peeking at the file's header with `open()` and closing
it dropped every POSIX lock the process held on the file, SQLite's included, and the old reader then stayed on
the generation it last saw (found running `clipsearch serve` under index runs)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.pipeline import index_folders
from retrieval.config import DATABASE_FILE
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.reader import open_reader
from retrieval.storage.store import Store

BUMP = """
import sqlite3, sys
writer = sqlite3.connect(sys.argv[1])
writer.execute("UPDATE library_state SET generation = generation + 1 WHERE id = 1")
writer.commit()
writer.close()
"""


def commit_elsewhere(database: Path) -> None:
    """A commit by another process (the last connection to close: SQLite checkpoints and resets the WAL)."""
    subprocess.run([sys.executable, "-c", BUMP, str(database)], check=True, timeout=60)


def open_another_reader(database: Path) -> None:
    reader = open_reader(database)
    assert reader is not None
    reader.close()


def open_the_store(database: Path) -> None:
    Store(f"sqlite:///{database}").close()


@pytest.mark.parametrize("open_again", [open_another_reader, open_the_store], ids=["reader", "store"])
def test_a_reader_sees_commits_after_the_library_is_opened_again(
    library: Library, tiny_encoder: Encoder, photos: Path, open_again: Callable[[Path], None]
) -> None:
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    database = library.directory / DATABASE_FILE
    library.close()
    reader = open_reader(database)
    assert reader is not None
    try:
        start = reader.generation()
        for step in range(1, 4):
            commit_elsewhere(database)
            open_again(database)
            assert reader.generation() == start + step
    finally:
        reader.close()
