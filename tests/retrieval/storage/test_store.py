"""Tests of retrieval.storage.store.Store and retrieval.library.Library on real SQLite files and real FAISS files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from retrieval.errors import LibraryBusyError, LibraryNotFoundError, ModelMismatchError
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.storage.migrations import MIGRATIONS, _set_id_high_water, apply_migrations
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store, StoreWriter, folder_prefix
from retrieval.storage.vectors import as_stored
from tests.libcheck import assert_same_vectors, store_vectors, unit_vectors
from tests.postgres_server import sqlite_only

DIM = 8
MODEL_KEY = "test-model"
_BUSY_EXIT = 3
_FORK = multiprocessing.get_context("fork")  # the child inherits the imports: no second torch import


def _vector(seed: int, dim: int = DIM) -> np.ndarray:
    """A unit vector whose float32 values float16 holds exactly, so the store gives it back bit for bit."""
    return as_stored(unit_vectors(1, seed, dim)[0])


def _meta(path: str, size: int = 100, content_hash: str | None = "hash", **extra: object) -> FileMetadata:
    return FileMetadata(path=path, size=size, mtime_ns=size * 1000, content_hash=content_hash, **extra)  # type: ignore[arg-type]


def _snapshot(store: Store, dim: int = DIM) -> tuple[int, dict[int, np.ndarray]]:
    """The store's generation and every (id -> vector), read through `vector_snapshot`."""
    generation, ids, vectors = store_vectors(store, dim)
    return generation, dict(zip(ids.tolist(), vectors, strict=True))


def _add(store: Store, *paths: str) -> list[int]:
    with store.writer() as writer:
        return [writer.upsert_image(_meta(path), _vector(n), MODEL_KEY) for n, path in enumerate(paths)]


def _fail(store: Store, path: str, reason: str = "truncated") -> int:
    with store.writer() as writer:
        return writer.record_failure(path, 7, 7000, reason, None)


@pytest.fixture
def db_url(store_url: str) -> str:
    """Every store test runs on SQLite and on PostgreSQL (`tests/postgres_server.py`)."""
    return store_url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url, create=True)
    opened.ensure_created()
    yield opened
    opened.close()


# --- migrations and SQLite settings ------------------------------------------------------------


def _migration_rows(store: Store) -> list[tuple[str, object]]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text("SELECT name, applied_at FROM schema_migrations"))]


def test_fresh_store_records_migrations_once(db_url: str) -> None:
    """A new database records every migration (0001_initial first); reopening it applies nothing."""
    first = Store(db_url, create=True)
    first.ensure_created()
    rows = _migration_rows(first)
    assert [name for name, _ in rows] == [name for name, _ in MIGRATIONS]
    assert rows[0][0] == "0001_initial"
    assert first.generation() == 0
    first.close()

    again = Store(db_url)
    assert _migration_rows(again) == rows  # same names, same applied_at: nothing re-run
    with again.engine.begin() as conn:
        assert apply_migrations(conn) == []
    again.close()


@sqlite_only
def test_database_is_in_wal_mode(store: Store, tmp_path: Path) -> None:
    """The store's connections use WAL, and the setting is persisted in the file for other clients."""
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    other = sqlite3.connect(tmp_path / "store.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


# --- StoreWriter -------------------------------------------------------------------------------


def test_upsert_inserts_then_replaces_by_path(store: Store) -> None:
    """A second upsert of the same path keeps the id and replaces vector, metadata and error."""
    taken = datetime(2021, 5, 6, 7, 8, 9)
    with store.writer() as writer:
        first = writer.upsert_image(_meta("/p/a.jpg", size=10, width=4, taken_at=taken), _vector(1), MODEL_KEY)
    _fail(store, "/p/a.jpg")
    with store.writer() as writer:
        second = writer.upsert_image(_meta("/p/a.jpg", size=20, content_hash="new"), _vector(2), "other-model")
    assert second == first
    _, vectors = _snapshot(store)
    assert list(vectors) == [first]
    np.testing.assert_array_equal(vectors[first], _vector(2))
    record = store.image_by_path("/p/a.jpg")
    assert record is not None
    assert (record.size, record.content_hash, record.width, record.taken_at) == (20, "new", None, None)
    assert record.error is None


def test_record_failure_drops_vector_and_sets_error(store: Store) -> None:
    """A file that became unreadable loses its vector, keeps its id and records the reason and stat."""
    (image_id,) = _add(store, "/p/a.jpg")
    assert _fail(store, "/p/a.jpg", "cannot identify image") == image_id
    record = store.image_by_path("/p/a.jpg")
    assert record is not None
    assert (record.id, record.size, record.mtime_ns, record.error) == (image_id, 7, 7000, "cannot identify image")
    assert store.count_vectors() == 0
    assert _snapshot(store)[1] == {}
    assert store.file_states_under("/p")["/p/a.jpg"].has_vector is False


def test_move_image_keeps_id_and_vector(store: Store) -> None:
    """A move changes path and stat only; the old path is gone, id, hash and vector stay."""
    (image_id,) = _add(store, "/p/a.jpg")
    with store.writer() as writer:
        writer.move_image(image_id, "/q/moved.jpg", 555, 666)
    assert store.image_by_path("/p/a.jpg") is None
    moved = store.image_by_path("/q/moved.jpg")
    assert moved is not None
    assert (moved.id, moved.size, moved.mtime_ns, moved.content_hash) == (image_id, 555, 666, "hash")
    np.testing.assert_array_equal(_snapshot(store)[1][image_id], _vector(0))


def test_touch_image_updates_stat_only(store: Store) -> None:
    """A touch records the new size and mtime and leaves path, hash and vector alone."""
    (image_id,) = _add(store, "/p/a.jpg")
    with store.writer() as writer:
        writer.touch_image(image_id, 101, 202)
    record = store.image_by_path("/p/a.jpg")
    assert record is not None
    assert (record.id, record.size, record.mtime_ns, record.content_hash) == (image_id, 101, 202, "hash")
    np.testing.assert_array_equal(_snapshot(store)[1][image_id], _vector(0))


def test_copy_vector_creates_a_row_with_the_donor_vector(store: Store) -> None:
    """A copy is a new row (new id) with the donor's vector and image facts but its own path and stat."""
    taken = datetime(2020, 1, 2, 3, 4, 5)
    with store.writer() as writer:
        donor = writer.upsert_image(
            _meta("/p/a.jpg", width=30, height=20, format="JPEG", taken_at=taken, camera_make="Acme"),
            _vector(5),
            MODEL_KEY,
        )
    with store.writer() as writer:
        copy = writer.copy_vector(_meta("/q/copy.jpg", size=300, content_hash="same"), donor)
    assert copy != donor
    _, vectors = _snapshot(store)
    np.testing.assert_array_equal(vectors[copy], vectors[donor])
    record = store.image_by_path("/q/copy.jpg")
    assert record is not None
    assert (record.size, record.content_hash) == (300, "same")
    assert (record.width, record.height, record.format, record.taken_at, record.camera_make) == (
        30,
        20,
        "JPEG",
        taken,
        "Acme",
    )


def test_copy_vector_needs_a_donor_with_a_vector(store: Store) -> None:
    """Copying from a failed row or a missing id is a LookupError and writes nothing."""
    failed = _fail(store, "/p/bad.jpg")
    generation = store.generation()
    for donor in (failed, 10_000):
        with pytest.raises(LookupError), store.writer() as writer:
            writer.copy_vector(_meta("/q/copy.jpg"), donor)
    assert store.image_by_path("/q/copy.jpg") is None
    assert store.generation() == generation


def test_delete_images_counts_deleted_rows(store: Store) -> None:
    """delete_images removes the rows and returns how many existed."""
    ids = _add(store, "/p/a.jpg", "/p/b.jpg", "/p/c.jpg")
    with store.writer() as writer:
        assert writer.delete_images([ids[0], ids[2], 999]) == 2
    assert list(_snapshot(store)[1]) == [ids[1]]
    assert store.image_by_path("/p/a.jpg") is None and store.image_by_path("/p/c.jpg") is None


WriterOp = Callable[[StoreWriter, dict[str, int]], object]

GENERATION_CASES: dict[str, tuple[WriterOp, int]] = {
    "upsert new path": (lambda w, ids: w.upsert_image(_meta("/p/new.jpg"), _vector(9), MODEL_KEY), 1),
    "upsert existing path": (lambda w, ids: w.upsert_image(_meta("/p/a.jpg"), _vector(9), MODEL_KEY), 1),
    "two upserts, one transaction": (
        lambda w, ids: [w.upsert_image(_meta(f"/p/n{i}.jpg"), _vector(i), MODEL_KEY) for i in range(2)],
        1,
    ),
    "failure of an indexed row": (lambda w, ids: w.record_failure("/p/a.jpg", 1, 1, "bad", None), 1),
    "failure of a failed row": (lambda w, ids: w.record_failure("/p/bad.jpg", 1, 1, "bad", None), 0),
    "failure of a new path": (lambda w, ids: w.record_failure("/p/other.jpg", 1, 1, "bad", None), 0),
    "delete a row": (lambda w, ids: w.delete_images([ids["a"]]), 1),
    "delete a missing id": (lambda w, ids: w.delete_images([123_456]), 0),
    "delete nothing": (lambda w, ids: w.delete_images([]), 0),
    "copy a vector": (lambda w, ids: w.copy_vector(_meta("/q/copy.jpg"), ids["a"]), 1),
    "move": (lambda w, ids: w.move_image(ids["a"], "/q/a.jpg", 1, 1), 0),
    "touch": (lambda w, ids: w.touch_image(ids["a"], 1, 1), 0),
    "no writes": (lambda w, ids: None, 0),
}


@pytest.mark.parametrize("case", list(GENERATION_CASES))
def test_generation_moves_exactly_when_vectors_change(case: str, store: Store) -> None:
    """Each committed transaction that changes the set of vectors bumps the generation by one; others don't."""
    operation, delta = GENERATION_CASES[case]
    ids = {"a": _add(store, "/p/a.jpg")[0], "bad": _fail(store, "/p/bad.jpg")}
    before = store.generation()
    with store.writer() as writer:
        operation(writer, ids)
    assert store.generation() == before + delta
    assert store.stats().generation == before + delta


def test_meta_writes_leave_the_generation_alone(store: Store) -> None:
    """Library facts are stored and replaced without touching the generation."""
    _add(store, "/p/a.jpg")
    before = store.generation()
    store.set_meta({"model": "m1", "dim": "8"})
    store.set_meta({"model": "m2"})
    assert (store.get_meta("model"), store.get_meta("dim"), store.get_meta("absent")) == ("m2", "8", None)
    assert store.generation() == before


def test_failed_transaction_writes_nothing(store: Store) -> None:
    """An exception inside `writer()` rolls back every write and the generation bump."""
    (kept,) = _add(store, "/p/a.jpg")
    before = store.generation()
    with pytest.raises(RuntimeError, match="boom"), store.writer() as writer:
        writer.upsert_image(_meta("/p/new.jpg"), _vector(3), MODEL_KEY)
        writer.move_image(kept, "/q/moved.jpg", 1, 1)
        writer.delete_images([kept])
        raise RuntimeError("boom")
    assert store.generation() == before
    assert store.image_by_path("/p/new.jpg") is None
    record = store.image_by_path("/p/a.jpg")
    assert record is not None and record.id == kept
    assert list(_snapshot(store)[1]) == [kept]


def test_deleted_ids_are_never_reused(store: Store) -> None:
    """AUTOINCREMENT: after deleting the highest id, the next row gets a new id (FAISS ids stay unique)."""
    ids = _add(store, "/p/a.jpg", "/p/b.jpg", "/p/c.jpg")
    with store.writer() as writer:
        writer.delete_images([ids[-1]])
    (fresh,) = _add(store, "/p/d.jpg")
    assert fresh > max(ids)
    with store.writer() as writer:
        writer.delete_images([*ids[:2], fresh])
    (after_all,) = _add(store, "/p/e.jpg")
    assert after_all > fresh


def test_ids_go_past_32_bits(store: Store) -> None:
    """Ids count every path a library ever held (never reused): past 2**32 they still work, in the store and
    in a FAISS index (a 32-bit SERIAL on PostgreSQL refused them before migration 0005)."""
    with store.engine.begin() as conn:
        _set_id_high_water(conn, 2**32)
    (big,) = _add(store, "/p/big.jpg")
    assert big == 2**32 + 1
    record = store.image_by_path("/p/big.jpg")
    assert record is not None and record.id == big and store.rows_by_ids([big])[big].path == "/p/big.jpg"
    generation, vectors = _snapshot(store)
    assert (generation, list(vectors)) == (1, [big])
    index = VectorIndex(DIM, gpu="never")
    index.add(np.array([big]), np.stack(list(vectors.values())))
    assert index.search(vectors[big][None, :], 1)[1].tolist() == [[big]]


# --- reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("/a/b", "/a/b/"), ("/a/b/", "/a/b/"), ("/", "/")],
)
def test_folder_prefix(prefix: str, expected: str) -> None:
    """A folder becomes a prefix ending in one separator."""
    assert folder_prefix(prefix) == expected


FOLDER_PATHS = [
    "/a/b/1.jpg",
    "/a/b/sub/2.jpg",
    "/a/b/broken.jpg",  # failed: a file state, but no vector
    "/a/bc/3.jpg",
    "/a/b.jpg",
    "/a/B/4.jpg",
    "/w/x%z/5.jpg",
    "/w/xyz/6.jpg",
    "/w/x_z/7.jpg",
    "/w/xqz/8.jpg",
    "/w/café/9.jpg",
]


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("/a/b", {"/a/b/1.jpg", "/a/b/sub/2.jpg", "/a/b/broken.jpg"}),
        ("/a/b/", {"/a/b/1.jpg", "/a/b/sub/2.jpg", "/a/b/broken.jpg"}),
        ("/a/b/sub", {"/a/b/sub/2.jpg"}),
        ("/a/B", {"/a/B/4.jpg"}),  # paths are case-sensitive, SQL LIKE in SQLite is not
        ("/w/x%z", {"/w/x%z/5.jpg"}),
        ("/w/x_z", {"/w/x_z/7.jpg"}),
        ("/w/x", set()),
        ("/w/café", {"/w/café/9.jpg"}),
        ("/nowhere", set()),
    ],
)
def test_folder_queries_match_whole_folder_names_literally(folder: str, expected: set[str], store: Store) -> None:
    """file_states_under / ids_under take exactly the files below `folder`: no sibling with a longer
    name, no other letter case, and `%` / `_` in folder names are plain characters."""
    with store.writer() as writer:
        ids = {path: writer.upsert_image(_meta(path), _vector(n), MODEL_KEY) for n, path in enumerate(FOLDER_PATHS)}
        writer.record_failure("/a/b/broken.jpg", 1, 1, "bad", None)
    states = store.file_states_under(folder)
    assert set(states) == expected
    assert all(state.path == path and state.id == ids[path] for path, state in states.items())
    with_vectors = {ids[path] for path in expected if path != "/a/b/broken.jpg"}
    under = store.ids_under(folder)
    assert under.dtype == np.int64
    assert sorted(under.tolist()) == sorted(with_vectors)


def test_ids_under_walks_the_path_index(store: Store) -> None:
    """The folder query (`--in`) reads the folder's rows through the path index, not every row with a vector:
    SQLite's plan for the statement `ids_under` runs searches `ix_images_path`. (With `has_vector` in the
    WHERE clause it took a (has_vector, ...) index instead: 94 ms for a 0.1% folder of 100k rows.)"""
    with store.writer() as writer:
        for n in range(200):
            writer.upsert_image(_meta(f"/f{n % 10}/{n}.jpg"), _vector(n), MODEL_KEY)
        writer.record_failure("/f3/broken.jpg", 1, 1, "truncated", None)
    statements: list[tuple[str, object]] = []

    def remember(_conn: object, _cursor: object, statement: str, parameters: object, *_rest: object) -> None:
        statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", remember)
    try:
        found = store.ids_under("/f3")
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", remember)
    assert len(found) == 20 and (np.diff(found) > 0).all()
    statement, parameters = next((s, p) for s, p in statements if "FROM images" in s)
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # on 200 rows a table scan is cheaper: can the index serve it?
            conn.exec_driver_sql("SET enable_seqscan = off")
        explain = "EXPLAIN QUERY PLAN" if conn.dialect.name == "sqlite" else "EXPLAIN"
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"{explain} {statement}", parameters))
    assert "ix_images_path" in plan, plan


def test_file_state_fields(store: Store) -> None:
    """A file's stored state carries id, stat, hash, whether a vector exists, and the error."""
    (good,) = _add(store, "/p/good.jpg")
    bad = _fail(store, "/p/bad.jpg", "truncated")
    states = {
        path: (s.id, s.path, s.size, s.mtime_ns, s.content_hash, s.has_vector, s.error)
        for path, s in store.file_states_under("/p").items()
    }
    assert states["/p/good.jpg"] == (good, "/p/good.jpg", 100, 100_000, "hash", True, None)
    assert states["/p/bad.jpg"] == (bad, "/p/bad.jpg", 7, 7000, None, False, "truncated")


def test_states_with_sizes(store: Store) -> None:
    """Only rows of the asked sizes that have a content hash are move candidates, across IN chunks."""
    with store.writer() as writer:
        for path, size, content_hash in [
            ("/p/a.jpg", 100, "h1"),
            ("/p/a2.jpg", 100, "h1"),
            ("/p/b.jpg", 200, "h2"),
            ("/p/nohash.jpg", 300, None),
        ]:
            writer.upsert_image(_meta(path, size=size, content_hash=content_hash), _vector(size), MODEL_KEY)
    assert {s.path for s in store.states_with_sizes({100, 300, 999})} == {"/p/a.jpg", "/p/a2.jpg"}
    many = store.states_with_sizes(range(1, 1301))  # three chunks of the IN list
    assert sorted(s.path for s in many) == ["/p/a.jpg", "/p/a2.jpg", "/p/b.jpg"]
    assert store.states_with_sizes([]) == []


def test_rows_by_ids_crosses_chunks(store: Store) -> None:
    """rows_by_ids finds every present id among more than 500 (missing ones are simply absent)."""
    paths = [f"/p/{n:04d}.jpg" for n in range(1100)]
    with store.writer() as writer:
        ids = [writer.upsert_image(_meta(path, size=n), _vector(0), MODEL_KEY) for n, path in enumerate(paths)]
    rows = store.rows_by_ids([*reversed(ids), 10**9, -1])
    assert set(rows) == set(ids)
    assert all(rows[i].path == path and rows[i].size == n for n, (i, path) in enumerate(zip(ids, paths, strict=True)))
    assert store.rows_by_ids([]) == {}


def test_image_by_path_round_trips_metadata(store: Store) -> None:
    """Every stored fact comes back on the record; an unknown path gives None."""
    taken = datetime(2019, 12, 31, 23, 59, 58)
    meta = _meta(
        "/p/photo.jpg",
        size=4096,
        width=640,
        height=480,
        format="JPEG",
        taken_at=taken,
        camera_make="Acme",
        camera_model="X1",
    )
    with store.writer() as writer:
        image_id = writer.upsert_image(meta, _vector(1), MODEL_KEY)
    record = store.image_by_path("/p/photo.jpg")
    assert record is not None
    assert (record.id, record.path, record.size, record.mtime_ns, record.content_hash) == (
        image_id,
        "/p/photo.jpg",
        4096,
        4_096_000,
        "hash",
    )
    assert (record.width, record.height, record.format) == (640, 480, "JPEG")
    assert (record.taken_at, record.camera_make, record.camera_model, record.error) == (taken, "Acme", "X1", None)
    assert isinstance(record.indexed_at, datetime)
    assert store.image_by_path("/p/other.jpg") is None
    assert store.image_by_path("/p") is None


def test_stats(store: Store) -> None:
    """stats counts indexed and failed rows, sums indexed bytes, spans taken dates, lists failures by path."""
    empty = store.stats()
    assert (empty.indexed, empty.failed, empty.total_bytes) == (0, 0, 0)
    assert empty.first_taken is None and empty.last_taken is None
    assert empty.failures == [] and empty.generation == 0
    dates = [datetime(2018, 1, 1), None, datetime(2022, 6, 30)]
    with store.writer() as writer:
        for n, (size, taken) in enumerate(zip((10, 20, 30), dates, strict=True)):
            writer.upsert_image(_meta(f"/p/{n}.jpg", size=size, taken_at=taken), _vector(n), MODEL_KEY)
        for path in ("/p/z.jpg", "/p/m.jpg", "/p/x.jpg"):
            writer.record_failure(path, 1000, 1, f"bad {path}", None)
    stats = store.stats(failure_limit=2)
    assert (stats.indexed, stats.failed, stats.total_bytes) == (3, 3, 60)
    assert (stats.first_taken, stats.last_taken) == (datetime(2018, 1, 1), datetime(2022, 6, 30))
    assert stats.failures == [("/p/m.jpg", "bad /p/m.jpg"), ("/p/x.jpg", "bad /p/x.jpg")]
    assert stats.generation == store.generation() == 1
    assert len(store.stats().failures) == 3
    assert store.count_vectors() == 3


def test_vector_snapshot_agrees_with_writes(store: Store) -> None:
    """The snapshot's generation is the store's, its batches hold every vector once, in id order, bit-exact."""
    assert _snapshot(store) == (0, {})
    written = {}
    with store.writer() as writer:
        for n in range(10):
            vector = np.random.default_rng(n).standard_normal(DIM)  # float64 in, float16 stored, float32 out
            written[writer.upsert_image(_meta(f"/p/{n}.jpg"), vector, MODEL_KEY)] = as_stored(vector)
        writer.record_failure("/p/3.jpg", 1, 1, "bad", None)
    (failed_id,) = [i for i, record in store.rows_by_ids(written).items() if record.error]
    del written[failed_id]
    with store.vector_snapshot(DIM, batch=4) as (generation, batches):
        parts = list(batches)
    assert generation == store.generation() == 1
    assert [len(ids) for ids, _ in parts] == [4, 4, 1]
    ids = np.concatenate([ids for ids, _ in parts])
    vectors = np.concatenate([vectors for _, vectors in parts])
    assert ids.dtype == np.int64 and vectors.dtype == np.float32
    assert ids.tolist() == sorted(written)
    np.testing.assert_array_equal(vectors, np.stack([written[i] for i in sorted(written)]))


def test_vector_snapshot_is_isolated_from_a_concurrent_commit(store: Store, db_url: str) -> None:
    """A commit from another connection after the snapshot began is not visible in its batches."""
    _add(store, "/p/a.jpg")
    other = Store(db_url)
    try:
        with store.vector_snapshot(DIM) as (generation, batches):
            _add(other, "/p/late.jpg")
            ids = [int(i) for part, _ in batches for i in part]
    finally:
        other.close()
    assert generation == 1
    assert len(ids) == 1


# --- Library -----------------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path, library_url: str | None) -> Iterator[Library]:
    """A new library whose store is a SQLite file in its folder, then a PostgreSQL database."""
    with Library(tmp_path / "library", create=True, database_url=library_url) as opened:
        yield opened


@pytest.fixture
def encoder(tiny_spec: ModelSpec) -> Encoder:
    """The tiny model's encoder, unloaded: identity and dim need only its config."""
    return Encoder(tiny_spec, device="cpu")


def test_missing_library_is_not_created(tmp_path: Path) -> None:
    """Opening a library that does not exist fails with LibraryNotFoundError and creates nothing."""
    missing = tmp_path / "nothing-here"
    with pytest.raises(LibraryNotFoundError, match="no library at"):
        Library(missing)
    assert not missing.exists()
    with Library(missing, create=True) as created:
        assert created.store.count_vectors() == 0 and created.recorded_identity() is None  # reads as empty
    assert not missing.exists()  # created on the first write, not on opening
    with Library(missing, create=True) as created:
        created.create()
    with Library(missing) as reopened:
        assert reopened.store.generation() == 0


def test_bind_model_records_the_model(
    library: Library, encoder: Encoder, tiny_spec: ModelSpec, library_url: str | None
) -> None:
    """The first bind records model, identity and dim; a reopened library reuses them with no spec."""
    assert library.recorded_model() is None and library.dim() is None
    library.bind_model(encoder)
    library.bind_model(encoder)  # the same model again is fine
    assert library.recorded_identity() == encoder.identity.key
    assert library.dim() == encoder.dim == 32
    assert library.recorded_model() == tiny_spec.absolute()
    with Library(library.directory, database_url=library_url) as reopened:
        assert reopened.encoder(device="cpu").identity == encoder.identity


def test_another_model_is_refused_naming_both(library: Library, encoder: Encoder, other_spec: ModelSpec) -> None:
    """A library bound to one model refuses an encoder of another, naming both identities."""
    library.bind_model(encoder)
    other = Encoder(other_spec, device="cpu")
    assert other.identity.key != encoder.identity.key
    for attempt in (lambda: library.bind_model(other), lambda: library.encoder(other_spec, device="cpu")):
        with pytest.raises(ModelMismatchError) as caught:
            attempt()
        assert encoder.identity.key in str(caught.value)
        assert other.identity.key in str(caught.value)
    assert library.recorded_identity() == encoder.identity.key
    assert library.dim() == 32


@pytest.fixture
def filled(library: Library, encoder: Encoder) -> Library:
    """A library bound to the tiny model with five vectors (generation 1)."""
    library.bind_model(encoder)
    with library.store.writer() as writer:
        for n in range(5):
            writer.upsert_image(_meta(f"/p/{n}.jpg"), _vector(n, dim=32), MODEL_KEY)
    return library


def _index_files(library: Library) -> list[str]:
    return sorted(p.name for p in library.directory.glob("index-*"))


def _assert_matches_store(index: VectorIndex, library: Library) -> None:
    _, ids, vectors = store_vectors(library.store, 32)
    assert_same_vectors(index, ids, vectors)


def test_load_index_without_a_model_is_empty(library: Library) -> None:
    """A library with no model recorded yet gives an empty index and writes no file."""
    assert len(library.load_index(gpu="never")) == 0
    assert _index_files(library) == []


def test_load_index_rebuilds_a_missing_file(filled: Library) -> None:
    """With no FAISS file the index is rebuilt from the store and saved as index-<generation>.faiss."""
    index = filled.load_index(gpu="never")
    _assert_matches_store(index, filled)
    assert filled.store.generation() == 1
    assert _index_files(filled) == ["index-1.faiss"]
    assert len(VectorIndex.load(filled.index_path(1), gpu="never")) == 5


def test_load_index_uses_a_current_complete_file(filled: Library) -> None:
    """A file of the current generation with the right count and dim is used as is, not rebuilt."""
    marked = VectorIndex(32, gpu="never")
    marked.add(np.arange(100, 105), np.stack([_vector(50 + n, dim=32) for n in range(5)]))
    filled.save_index(marked, filled.store.generation())
    loaded = filled.load_index(gpu="never")
    np.testing.assert_array_equal(np.sort(loaded.ids()), np.arange(100, 105))


def test_load_index_rebuilds_after_the_generation_moves_on(filled: Library) -> None:
    """A write after saving makes the saved file stale: it is rebuilt, saved anew, and the old file deleted."""
    assert len(filled.load_index(gpu="never")) == 5
    with filled.store.writer() as writer:
        late = writer.upsert_image(_meta("/p/late.jpg"), _vector(99, dim=32), MODEL_KEY)
    index = filled.load_index(gpu="never")
    assert late in index.ids().tolist()
    _assert_matches_store(index, filled)
    assert _index_files(filled) == ["index-2.faiss"]


@pytest.mark.parametrize("stale", ["too few vectors", "other dimension"])
def test_load_index_rebuilds_a_file_that_disagrees_with_the_store(stale: str, filled: Library) -> None:
    """A file of the current generation whose count or dimension is wrong is rebuilt, not trusted."""
    dim = 32 if stale == "too few vectors" else 16
    count = 3 if stale == "too few vectors" else 5
    wrong = VectorIndex(dim, gpu="never")
    wrong.add(np.arange(count), np.stack([_vector(n, dim=dim) for n in range(count)]))
    filled.save_index(wrong, filled.store.generation())
    index = filled.load_index(gpu="never")
    assert index.dim == 32
    _assert_matches_store(index, filled)
    reread = VectorIndex.load(filled.index_path(filled.store.generation()), gpu="never")
    assert (reread.dim, len(reread)) == (32, 5)


def test_saving_deletes_older_index_files_but_keeps_newer(filled: Library) -> None:
    """Rebuilding at generation 1 deletes index-0 but keeps index-7 (a concurrent writer's) and other files."""
    placeholder = VectorIndex(32, gpu="never")
    for name in ("index-0.faiss", "index-7.faiss", "index-notes.faiss"):
        placeholder.save(filled.directory / name)
    filled.load_index(gpu="never")
    assert _index_files(filled) == ["index-1.faiss", "index-7.faiss", "index-notes.faiss"]


def _take_lock(directory: str, url: str | None) -> None:
    """Child process: try the writer lock once; exit 0 if taken, _BUSY_EXIT if refused."""
    with Library(directory, database_url=url) as library:
        try:
            with library.writer_lock():
                pass
        except LibraryBusyError:
            sys.exit(_BUSY_EXIT)


def _hold_lock(directory: str, url: str | None, held: Event, release: Event) -> None:
    """Child process: take the writer lock, report it, then wait (until killed)."""
    with Library(directory, database_url=url) as library, library.writer_lock():
        held.set()
        release.wait()


def _run_child(target: Callable[..., None], *args: object) -> int | None:
    child = _FORK.Process(target=target, args=args)
    child.start()
    child.join(timeout=60)
    return child.exitcode


def test_writer_lock_refuses_a_second_process(library: Library, library_url: str | None) -> None:
    """While this process holds the lock another process gets LibraryBusyError; after release it succeeds."""
    library.create()
    directory = str(library.directory)
    with library.writer_lock():
        assert (library.directory / "index.lock").read_text() == str(os.getpid())
        assert _run_child(_take_lock, directory, library_url) == _BUSY_EXIT
    assert _run_child(_take_lock, directory, library_url) == 0


def test_writer_lock_is_dropped_when_its_holder_dies(library: Library, library_url: str | None) -> None:
    """A lock held by a process that is killed is released by the OS (and on PostgreSQL the run lock by the
    server, when the holder's connection drops): the next writer proceeds."""
    library.create()
    held, release = _FORK.Event(), _FORK.Event()
    holder = _FORK.Process(target=_hold_lock, args=(str(library.directory), library_url, held, release))
    holder.start()
    try:
        assert held.wait(timeout=60), "the child never took the lock"
        with pytest.raises(LibraryBusyError, match="another clipsearch process"), library.writer_lock():
            pass
    finally:
        holder.kill()
        holder.join(timeout=60)
    assert holder.exitcode == -signal.SIGKILL
    with library.writer_lock():
        assert (library.directory / "index.lock").read_text() == str(os.getpid())


def test_readers_see_the_last_commit_while_a_write_is_open(store: Store, db_url: str) -> None:
    """WAL: a search in another connection runs during an index batch's open transaction, sees the last
    committed state, and sees the batch only once it commits."""
    _add(store, "/p/first.jpg")
    reader = Store(db_url)
    try:
        with store.writer() as writer:
            writer.upsert_image(_meta("/p/second.jpg"), _vector(2), MODEL_KEY)
            assert reader.count_vectors() == 1
            assert reader.image_by_path("/p/second.jpg") is None
        assert reader.count_vectors() == 2
    finally:
        reader.close()
