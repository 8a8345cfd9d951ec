"""Tests of `StoreWriter.add_images`, the bulk path for new rows: one multi-row INSERT per batch inside the
writer's transaction, with `upsert_image`'s guarantees (no duplicates, a batch commits whole or not at all,
a killed fill finished by running it again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from retrieval.storage.records import FileMetadata
from retrieval.storage.schema import ImageRow
from retrieval.storage.store import Store
from retrieval.storage.vectors import as_stored
from tests.fresh import ROOT
from tests.libcheck import store_vectors, unit_vectors

DIM = 8
KEY = "test-model"


def _meta(n: int, folder: str = "/bulk") -> FileMetadata:
    return FileMetadata(f"{folder}/{n:05d}.jpg", 1000 + n, n * 7, f"hash{n}", width=n, height=2 * n, format="PNG")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """On SQLite and on PostgreSQL."""
    opened = Store(store_url, create=True)
    opened.ensure_created()
    yield opened
    opened.close()


def _paths_and_ids(store: Store) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        return [(row[0], row[1]) for row in conn.execute(sa.select(ImageRow.path, ImageRow.id).order_by(ImageRow.id))]


def test_add_images_inserts_in_order_with_vectors_and_facts(store: Store) -> None:
    """New paths get ascending ids in input order, their float16 vectors and every fact; one generation step."""
    vectors = as_stored(unit_vectors(300, 1, DIM))
    before = store.generation()
    with store.writer() as writer:
        ids = writer.add_images([_meta(n) for n in range(300)], vectors, KEY)
    assert ids == sorted(ids) and len(set(ids)) == 300
    assert store.generation() == before + 1
    _, stored_ids, stored = store_vectors(store, DIM)
    np.testing.assert_array_equal(stored_ids, ids)
    np.testing.assert_array_equal(stored, vectors)
    record = store.image_by_path("/bulk/00007.jpg")
    assert record is not None and record.id == ids[7] and record.has_vector and record.error is None
    facts = (record.size, record.mtime_ns, record.content_hash, record.width, record.height)
    assert facts == (1007, 49, "hash7", 7, 14)


def test_add_images_replaces_known_paths_without_duplicates(store: Store) -> None:
    """A batch mixing known and new paths keeps the known rows' ids, replaces their vectors, and inserts the
    rest once: every path is in the store exactly once."""
    with store.writer() as writer:
        first = writer.add_images([_meta(n) for n in range(10)], as_stored(unit_vectors(10, 2, DIM)), KEY)
        writer.record_failure("/bulk/00012.jpg", 5, 5, "truncated", None)
    again = as_stored(unit_vectors(15, 3, DIM))
    with store.writer() as writer:
        ids = writer.add_images([_meta(n) for n in range(5, 20)], again, KEY)
    assert ids[:5] == first[5:]
    rows = _paths_and_ids(store)
    assert len(rows) == 20 and len({path for path, _ in rows}) == 20
    failed_before = store.image_by_path("/bulk/00012.jpg")
    assert failed_before is not None and failed_before.has_vector and failed_before.error is None
    _, stored_ids, stored = store_vectors(store, DIM)
    by_id = dict(zip(stored_ids.tolist(), stored, strict=True))
    for position, image_id in enumerate(ids):
        np.testing.assert_array_equal(by_id[image_id], again[position])


def test_add_images_refuses_bad_batches_before_writing(store: Store) -> None:
    with pytest.raises(ValueError, match="same path twice"), store.writer() as writer:
        writer.add_images([_meta(1), _meta(1)], unit_vectors(2, 4, DIM), KEY)
    with pytest.raises(ValueError, match="2 files for 3 vectors"), store.writer() as writer:
        writer.add_images([_meta(1), _meta(2)], unit_vectors(3, 4, DIM), KEY)
    assert _paths_and_ids(store) == [] and store.generation() == 0


def test_a_batch_that_fails_in_the_database_rolls_back_whole(store: Store) -> None:
    """A row the database rejects (a NULL size) in the middle of a batch: none of the batch's rows, nor the
    earlier writes of the same transaction, nor the generation step survive; earlier commits do."""
    with store.writer() as writer:
        kept = writer.add_images([_meta(n) for n in range(3)], as_stored(unit_vectors(3, 5, DIM)), KEY)
    generation = store.generation()
    broken = [_meta(n) for n in range(3, 53)]
    broken[25] = FileMetadata("/bulk/bad.jpg", None, 1, None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError), store.writer() as writer:
        writer.upsert_image(_meta(99), as_stored(unit_vectors(1, 6, DIM))[0], KEY)
        writer.add_images(broken, as_stored(unit_vectors(50, 7, DIM)), KEY)
    assert [image_id for _, image_id in _paths_and_ids(store)] == kept
    assert store.generation() == generation


_FILL_CHILD = """
import sys
import numpy as np
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store
from retrieval.storage.vectors import as_stored
from tests.libcheck import unit_vectors

url, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(url, create=True)
vectors = as_stored(unit_vectors(total, 8, 8))
for start in range(0, total, batch):
    metas = [FileMetadata(f"/fill/{n:06d}.jpg", n, n, f"h{n}") for n in range(start, min(total, start + batch))]
    with store.writer() as writer:
        writer.add_images(metas, vectors[start : start + len(metas)], "test-model")
    print(start + len(metas), flush=True)
"""


def _fill(url: str, total: int, batch: int) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", _FILL_CHILD, url, str(total), str(batch)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_fill_is_finished_by_running_it_again(store_url: str) -> None:
    """A fill killed with SIGKILL after a few committed batches, then run again from the start: every path
    once, the rows committed before the kill keep their ids, every vector is right."""
    url, total, batch = store_url, 40_000, 500
    child = _fill(url, total, batch)
    assert child.stdout is not None
    committed = [int(child.stdout.readline()) for _ in range(3)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL and committed[-1] < total
    store = Store(url)
    before = dict(_paths_and_ids(store))
    assert committed[-1] <= len(before) < total
    store.close()
    again = _fill(url, total, batch)
    assert again.wait(timeout=300) == 0
    store = Store(url)
    rows = dict(_paths_and_ids(store))
    assert len(rows) == total and len(set(rows.values())) == total
    assert all(rows[path] == image_id for path, image_id in before.items())
    _, _ids, stored = store_vectors(store, DIM)
    order = np.argsort([path for path, _ in sorted(rows.items(), key=lambda item: item[1])])
    np.testing.assert_array_equal(stored[order], as_stored(unit_vectors(total, 8, DIM)))
    store.close()
