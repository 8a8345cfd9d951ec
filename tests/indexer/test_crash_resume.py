"""An index run killed with SIGKILL mid-way loses at most the batch in flight: the store stays consistent,
the stale FAISS file is not trusted, and the next run embeds only what is missing, ending with exactly the
vectors a clean run makes.

The run being killed is a real child process (`python -c`), so the kill can land anywhere: in decoding,
encoding, or inside a SQLite transaction.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import index_folders
from retrieval.config import DATABASE_FILE
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, stored_rows, stored_vectors

pytestmark = pytest.mark.slow

IMAGE_COUNT = 150
KILL_AFTER = 8  # vectors committed (two batches of 4) before the child is killed
REPO_ROOT = Path(__file__).resolve().parents[2]  # the parent of the `tests` package, so the child imports it

CHILD_SCRIPT = """
import sys
from tests import netguard
netguard.install()
from indexer.pipeline import index_folders
from retrieval.model.encoder import Encoder
from retrieval.library import Library
from retrieval.model.specs import ModelSpec

library_dir, config, root = sys.argv[1:4]
with Library(library_dir, create=True) as library:
    encoder = Encoder(ModelSpec(config, "none"), device="cpu", batch_size=4)
    index_folders(library, encoder, [root], workers=2)
"""


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMAGE_COUNT distinct PNGs (every file's bytes differ, so no copy detection kicks in)."""
    root = tmp_path_factory.mktemp("many") / "photos"
    for seed in range(IMAGE_COUNT):
        factory.pattern_png(root / f"{seed // 50}" / f"p{seed:03d}.png", seed=1000 + seed, size=(96, 96))
    return root


@pytest.fixture(scope="module")
def clean_vectors(
    many_photos: Path, tiny_encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """The vectors of an uninterrupted full index of `many_photos` into a library of its own, by path."""
    with Library(tmp_path_factory.mktemp("clean") / "library", create=True) as library:
        report = index_folders(library, tiny_encoder, [str(many_photos)], workers=2)
        assert (report.embedded, report.failed) == (IMAGE_COUNT, 0)
        return stored_vectors(library)


def _committed_vectors(database: Path) -> int:
    """Rows with a vector, read through a separate read-only connection; 0 until the child made the table."""
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as conn:
            return int(conn.execute("SELECT count(*) FROM images WHERE vector IS NOT NULL").fetchone()[0])
    except sqlite3.DatabaseError:  # not created yet, or mid-migration
        return 0


@dataclass(frozen=True)
class Crash:
    """A library in a test's tmp_path, into which index runs of `photos` are started in child processes
    and killed, then resumed in-process with `encoder` and compared with `clean_vectors`."""

    library_dir: Path
    config: Path
    photos: Path
    encoder: Encoder
    clean_vectors: dict[str, np.ndarray]
    logs: Path

    def kill_after(self, at_least: int) -> int:
        """Start an index run in a child process, SIGKILL it as soon as `at_least` vectors are committed, and
        return how many were committed when it died."""
        log = self.logs / f"child-{at_least}.log"
        database = self.library_dir / DATABASE_FILE
        with open(log, "wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD_SCRIPT, str(self.library_dir), str(self.config), str(self.photos)],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                deadline = time.monotonic() + 60
                while _committed_vectors(database) < at_least:
                    assert child.poll() is None, f"child ended before it was killed:\n{log.read_text()}"
                    assert time.monotonic() < deadline, f"child made no progress:\n{log.read_text()}"
                    time.sleep(0.001)  # polling interval: the child gives no other signal
                os.kill(child.pid, signal.SIGKILL)
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, f"child was not killed:\n{log.read_text()}"
        committed = _committed_vectors(database)
        assert at_least <= committed < IMAGE_COUNT, "the kill landed after the run had finished"
        return committed

    def assert_consistent_after_kill(self, committed: int, *, load_index: bool = True) -> dict[str, int]:
        """What a killed run leaves: whole batches only, no duplicates, and a FAISS file that is not trusted;
        with `load_index`, loading rebuilds a correct index from the store (otherwise the next run must).
        Returns the ids of the committed rows, by path."""
        with Library(self.library_dir) as library:
            rows = stored_rows(library)
            assert len(rows) == committed == library.store.count_vectors()
            assert all(row["vector"] is not None and row["error"] is None for row in rows.values())
            current = library.index_path(library.store.generation())
            assert not current.exists() or len(VectorIndex.load(current, gpu="never")) != committed
            if load_index:
                assert_index_matches_store(library, after_completed_run=False)  # load_index rebuilds from the store
                assert library.index_path(library.store.generation()).exists()
            return {path: row["id"] for path, row in rows.items()}

    def finish_and_check(self, committed_ids: dict[str, int]) -> None:
        """Resume in-process: only the missing files are embedded, and the result equals a clean run's."""
        with Library(self.library_dir) as library:
            report = index_folders(library, self.encoder, [str(self.photos)], workers=2)
            assert report.embedded == IMAGE_COUNT - len(committed_ids)
            assert report.unchanged == len(committed_ids)
            assert (report.failed, report.moved, report.copied, report.removed) == (0, 0, 0, 0)

            rows = stored_rows(library)
            assert len(rows) == library.store.count_vectors() == IMAGE_COUNT
            assert all(rows[path]["id"] == row_id for path, row_id in committed_ids.items())
            assert_index_matches_store(library)
            vectors = stored_vectors(library)
            assert sorted(vectors) == sorted(self.clean_vectors)
            for path, vector in vectors.items():
                np.testing.assert_allclose(vector, self.clean_vectors[path], rtol=0, atol=1e-5)

            again = index_folders(library, self.encoder, [str(self.photos)], workers=2)
            assert (again.embedded, again.unchanged) == (0, IMAGE_COUNT)


@pytest.fixture
def crash(
    many_photos: Path, clean_vectors: dict[str, np.ndarray], tiny_config: Path, tiny_encoder: Encoder, tmp_path: Path
) -> Crash:
    return Crash(tmp_path / "library", tiny_config, many_photos, tiny_encoder, clean_vectors, tmp_path)


def test_killed_run_resumes_where_it_stopped(crash: Crash) -> None:
    """SIGKILL during a run keeps the committed batches; the rerun embeds exactly the rest."""
    committed = crash.kill_after(KILL_AFTER)
    crash.finish_and_check(crash.assert_consistent_after_kill(committed))


def test_run_killed_twice_still_ends_with_one_row_per_file(crash: Crash) -> None:
    """Two runs killed one after the other, then a complete one: every file exactly once, correct vectors."""
    first = crash.kill_after(KILL_AFTER)
    first_ids = crash.assert_consistent_after_kill(first)
    second = crash.kill_after(first + KILL_AFTER)
    # leave the stale FAISS file in place: the completing run itself must notice and rebuild it
    second_ids = crash.assert_consistent_after_kill(second, load_index=False)
    assert second > first
    assert all(second_ids[path] == row_id for path, row_id in first_ids.items())
    crash.finish_and_check(second_ids)
