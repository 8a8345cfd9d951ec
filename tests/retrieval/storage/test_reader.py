"""The light reader answers every read it offers exactly as the `Store` does, on the same real SQLite library,
and hands a library it was not written for (older, newer, damaged, foreign) back to the `Store`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from retrieval.config import DATABASE_FILE, ORIENTATIONS
from retrieval.dates import DateRange
from retrieval.errors import DamagedLibraryError
from retrieval.filters import SearchFilter
from retrieval.library import Library
from retrieval.storage import filter_queries as queries
from retrieval.storage import migrations
from retrieval.storage.reader import READER_SCHEMA, StoreReader, open_reader
from retrieval.storage.records import FileMetadata, ImageRecord
from retrieval.storage.store import Store
from tests.libcheck import unit_vectors
from tests.postgres_server import sqlite_only

DIM = 16
ODD = os.fsdecode(b"/photos/caf\xe9/\xff\xfe.jpg")  # not UTF-8: kept as the OS's bytes
PATHS = [
    "/photos/a/1.jpg",
    "/photos/a/sub/2.jpg",
    "/photos/ab/3.jpg",
    "/photos/100%_done/4.jpg",
    ODD,
    "/photos/a/gone.jpg",
]
FOLDERS = ["/photos/a", "/photos/a/", "/photos", "/photos/100%_done", os.fsdecode(b"/photos/caf\xe9"), "/", "/none"]


def _taken(n: int) -> datetime | None:
    """Every third row undated; odd rows with microseconds."""
    return datetime(2020, 1, 1, 12, 30, 5, 123456 * (n % 2)) + timedelta(days=n) if n % 3 else None


CAMERAS = [("Canon", "Canon EOS 5D"), ("Apple", "iPhone 12"), (None, None), ("NIKON CORPORATION", None)]


def _meta(n: int, path: str) -> FileMetadata:
    """Facts that vary with n: dated or not (`_taken`), four cameras, widths 20..49 for a height of 30."""
    make, model = CAMERAS[n % len(CAMERAS)]
    return FileMetadata(path, 1000 + n, 5_000 + n, f"h{n}", 20 + n % 30, 30, "PNG", _taken(n), make, model)


EXTENSIONS = ["jpg", "JPEG", "png", "heic", "tif"]


def _fill(store: Store) -> None:
    vectors = unit_vectors(len(PATHS) + 700, 1, DIM)
    with store.writer() as writer:
        for n, name in enumerate(PATHS):
            writer.upsert_image(_meta(n, name), vectors[n], "model")
        bulk = [_meta(n, f"/bulk/{n:04d}.{EXTENSIONS[n % len(EXTENSIONS)]}") for n in range(700)]
        writer.add_images(bulk, vectors[len(PATHS) :], "model")
        writer.record_failure("/photos/a/broken.jpg", 10, 20, "truncated", None)
        writer.record_failure(os.fsdecode(b"/photos/\xe9.jpg"), 11, 21, "not an image", "h")
    with store.writer() as writer:
        writer.delete_images([store.image_by_path("/photos/a/gone.jpg").id, 100])  # type: ignore[union-attr]
    store.set_meta({"model": "m", "dim": str(DIM), "empty": ""})


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written by two fills (a SQLite and a PostgreSQL store) get the same `indexed_at`, to the microsecond."""
    from retrieval.storage import writer

    monkeypatch.setattr(writer, "_now", lambda: datetime(2024, 5, 6, 7, 8, 9, 123456))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    """A library with vectors, a non-UTF-8 path, failed rows (no vector, an error), deleted rows, 700 more rows
    (reads cross the reader's chunks), and meta values."""
    path = tmp_path / DATABASE_FILE
    store = Store(f"sqlite:///{path}", create=True)
    _fill(store)
    store.close()
    yield path


@pytest.fixture
def both(database: Path, store_backend: str, store_url: str) -> Iterator[tuple[Store, StoreReader]]:
    """The reader on the SQLite library, and the Store on the same library (SQLite), or on a PostgreSQL
    store filled by the same writes (PostgreSQL): every read must agree either way."""
    if store_backend == "sqlite":
        store = Store(f"sqlite:///{database}")
    else:
        store = Store(store_url, create=True)
        _fill(store)
    reader = open_reader(database)
    assert reader is not None
    yield store, reader
    store.close()
    reader.close()


def test_every_read_answers_as_the_store_does(both: tuple[Store, StoreReader]) -> None:
    store, reader = both
    for key in ("model", "dim", "empty", "missing"):
        assert reader.get_meta(key) == store.get_meta(key), key
    assert (reader.generation(), reader.count_vectors()) == (store.generation(), store.count_vectors())
    assert reader.count_vectors() == len(PATHS) - 1 + 699
    for limit in (0, 1, 20, 1000):
        assert reader.stats(limit) == store.stats(limit), limit
    paths = [*PATHS, "/photos/a/broken.jpg", os.fsdecode(b"/photos/\xe9.jpg"), "/bulk/0100.jpg", "/missing.jpg"]
    assert reader.image_by_path("/bulk/0100.jpg") is not None
    for path in paths:
        assert reader.image_by_path(path) == store.image_by_path(path), path
    assert reader.image_by_path(ODD).path == ODD  # type: ignore[union-attr]
    ids = [*range(-1, 720), 10_000]
    assert reader.rows_by_ids(ids) == store.rows_by_ids(ids)
    assert _types(reader.rows_by_ids(ids)) == _types(store.rows_by_ids(ids))  # True == 1: equality is not enough
    assert reader.rows_by_ids([]) == store.rows_by_ids([]) == {}
    for folder in FOLDERS:
        np.testing.assert_array_equal(reader.ids_under(folder), store.ids_under(folder), err_msg=folder)
        assert reader.ids_under(folder).dtype == np.int64


FILTER_QUERIES = {
    "dated spring 2020": queries.dated(DateRange.of("2020-02", "2020-06")),
    "dated before 2020-03": queries.dated(DateRange.of(None, "2020-03")),
    "dated from 2021-06-15T12:30": queries.dated(DateRange.of("2021-06-15T12:30", None)),
    "modified in 1970 (undated)": queries.dated(DateRange.of("1969-12", "1970-02")),
    "cameras": queries.with_cameras(["Canon EOS 5D", "Apple iPhone 12", "nothing"]),
    "jpg": queries.with_extensions(["jpg"]),
    "png, heic": queries.with_extensions(["png", "heic"]),
    **{orientation: queries.with_orientation(orientation) for orientation in ORIENTATIONS},
    "width >= 35": queries.at_least("width", 35),
    "height >= 30": queries.at_least("height", 30),
    "height >= 31": queries.at_least("height", 31),
}


def test_every_filter_query_answers_as_the_store_does(both: tuple[Store, StoreReader]) -> None:
    """Each filter's query gives the same ids through either, and only ids with a vector; each keeps some and
    leaves some, except on heights (all 30): `height >= 30` keeps all, `height >= 31` none."""
    store, reader = both
    assert reader.camera_names() == store.camera_names() == ["Apple iPhone 12", "Canon EOS 5D", "NIKON CORPORATION"]
    with_vectors = set(store.ids_under("/").tolist())
    for name, query in FILTER_QUERIES.items():
        found = reader.filter_ids(query)
        np.testing.assert_array_equal(found, store.filter_ids(query), err_msg=name)
        assert found.dtype == np.int64 and set(found.tolist()) <= with_vectors, name
        expected = {"height >= 30": len(with_vectors), "height >= 31": 0}.get(name)
        assert len(found) == expected if expected is not None else 0 < len(found) < len(with_vectors), name
    chosen = SearchFilter.of(within=["/bulk", "/photos/a"], after="2020-03", camera="canon", extensions="jpg,png")
    allowed, reference = chosen.resolve(reader).allowed, chosen.resolve(store).allowed
    assert allowed is not None and reference is not None and len(allowed)
    np.testing.assert_array_equal(allowed, reference)


def _types(records: dict[int, ImageRecord]) -> set[tuple[str, type]]:
    return {(item.name, type(getattr(record, item.name))) for record in records.values() for item in fields(record)}


@sqlite_only
def test_the_reader_sees_what_a_stats_call_sees_with_dates(both: tuple[Store, StoreReader]) -> None:
    """Not only equal: the dates are real datetimes (microseconds kept) and the failures name byte paths."""
    _, reader = both
    stats = reader.stats(10)
    assert (stats.first_taken, stats.last_taken) == (_taken(1), _taken(698))
    assert stats.first_taken == datetime(2020, 1, 2, 12, 30, 5, 123456)
    assert (os.fsdecode(b"/photos/\xe9.jpg"), "not an image") in stats.failures and stats.failed == 2


def test_the_reader_supports_exactly_the_current_schema() -> None:
    """A migration added to the store must be looked at by the reader too (its SQL, then `READER_SCHEMA`)."""
    assert {name for name, _ in migrations.MIGRATIONS} == READER_SCHEMA


@pytest.mark.parametrize("change", ["newer", "older"])
def test_a_library_at_another_schema_is_left_to_the_store(database: Path, change: str) -> None:
    with sqlite3.connect(database) as connection:
        if change == "newer":
            connection.execute("INSERT INTO schema_migrations VALUES ('0099_from_the_future', '2030-01-01')")
        else:
            connection.execute("DELETE FROM schema_migrations WHERE name = '0002_byte_paths_half_vectors'")
    connection.close()
    assert open_reader(database) is None
    with Library(database.parent, reading=True) as library:
        assert isinstance(library.reads, Store)


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 10, None], ids=["empty", "garbage", "foreign"])
def test_what_the_reader_cannot_read_goes_to_the_store_which_refuses_it(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / DATABASE_FILE
    if content is None:
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE photos (name TEXT)")
        connection.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    assert open_reader(path) is None
    assert open_reader(tmp_path / "missing.db") is None
    with pytest.raises(DamagedLibraryError):
        Library(tmp_path, reading=True)
    assert path.read_bytes() == before


def test_reading_uses_the_reader_and_opens_the_store_only_to_write(database: Path) -> None:
    with Library(database.parent, reading=True) as library:
        assert isinstance(library.reads, StoreReader) and library._store is None
        assert library.dim() == DIM and library.facts(0).stats.indexed == len(PATHS) - 1 + 699
        library.rebuild_index(gpu="never")  # writes the FAISS file and its stamp: through the full store
        assert isinstance(library._store, Store)
        assert len(library.load_index(gpu="never")) == len(PATHS) - 1 + 699  # the reader sees the stamp
    with Library(database.parent) as library:
        assert isinstance(library.reads, Store)


def test_facts_are_the_same_either_way(database: Path) -> None:
    with Library(database.parent, reading=True) as light, Library(database.parent) as full:
        assert isinstance(light.reads, StoreReader)
        assert light.facts(5).to_json() == full.facts(5).to_json()


def test_the_reader_reads_while_an_index_run_writes(database: Path) -> None:
    """An open write transaction (an index run's batch) neither blocks the reader nor shows it half a batch; the
    commit shows it all."""
    store = Store(f"sqlite:///{database}")
    reader = open_reader(database)
    assert reader is not None
    count, generation = reader.count_vectors(), reader.generation()
    try:
        with store.writer() as writer:
            writer.upsert_image(_meta(1, "/photos/new.jpg"), unit_vectors(1, 9, DIM)[0], "model")
            assert (reader.count_vectors(), reader.generation()) == (count, generation)
            assert reader.image_by_path("/photos/new.jpg") is None
        assert (reader.count_vectors(), reader.generation()) == (count + 1, generation + 1)
        assert reader.image_by_path("/photos/new.jpg") == store.image_by_path("/photos/new.jpg")
    finally:
        reader.close()
        store.close()


def test_vectors_by_ids_answer_as_the_store_does(both: tuple[Store, StoreReader]) -> None:
    """What a large index re-ranks with: the stored vectors of the ids that have one (not the failed rows,
    not deleted or unknown ids), from the light reader exactly as from the store, over several IN chunks."""
    store, reader = both
    failed = store.image_by_path("/photos/a/broken.jpg")
    assert failed is not None
    wanted = np.array([*range(1, 1_200), failed.id, 10**9], dtype=np.int64)
    store_ids, store_vectors = store.vectors_by_ids(wanted, DIM)
    reader_ids, reader_vectors = reader.vectors_by_ids(wanted, DIM)
    assert failed.id not in store_ids and 100 not in store_ids and 10**9 not in store_ids
    assert len(store_ids) == store.count_vectors() and store_vectors.dtype == np.float32
    order, reader_order = np.argsort(store_ids), np.argsort(reader_ids)
    np.testing.assert_array_equal(store_ids[order], reader_ids[reader_order])
    np.testing.assert_array_equal(store_vectors[order], reader_vectors[reader_order])
    with store.vector_snapshot(DIM) as (_, batches):
        every = {int(i): row for ids, rows in batches for i, row in zip(ids, rows, strict=True)}
    np.testing.assert_array_equal(store_vectors, np.stack([every[int(i)] for i in store_ids]))
