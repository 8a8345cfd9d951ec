"""Migration 0002 on a database as 0001 left it (text paths, float32 vectors, no `has_vector`): every row keeps
its id and facts, vectors become float16, the id counter is carried over, and the new indexes serve the
folder and count queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from retrieval.storage import filter_queries as queries
from retrieval.storage import migrations
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store
from retrieval.storage.vectors import as_stored
from tests.libcheck import store_vectors, unit_vectors

DIM = 16
PATHS = ["/a/b/1.jpg", "/a/b/sub/2.jpg", "/a/bc/3.jpg", "/a/café/4.jpg", "/a/b/broken.jpg", "/a/b/gone.jpg"]


_INSERT_0001 = sa.text(
    "INSERT INTO images (path, size, mtime_ns, content_hash, taken_at, vector, model_key, error, indexed_at)"
    " VALUES (:path, :size, :mtime_ns, :content_hash, :taken_at, :vector, :model_key, :error, :indexed_at)"
).bindparams(sa.bindparam("vector", type_=sa.LargeBinary))


@pytest.fixture
def old_database(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, np.ndarray]]:
    """A store made by 0001 alone, with rows written as 0001's code wrote them; the last id was deleted.
    On SQLite and on PostgreSQL (where 0002 carries the id sequence over)."""
    url = store_url
    vectors = unit_vectors(len(PATHS), 3, DIM)
    engine = sa.create_engine(url)
    with monkeypatch.context() as patch, engine.begin() as conn:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
        migrations.apply_migrations(conn)
        for n, path in enumerate(PATHS):
            failed = path.endswith("broken.jpg")
            conn.execute(
                _INSERT_0001,
                {
                    "path": path, "size": 100 + n, "mtime_ns": 1000 + n, "content_hash": f"h{n}",
                    "taken_at": datetime(2020, 1, n + 1) if n < 3 else None,
                    "vector": None if failed else vectors[n].astype(np.float32).tobytes(),
                    "model_key": None if failed else "m", "error": "truncated" if failed else None,
                    "indexed_at": datetime(2024, 1, 1),
                },
            )  # fmt: skip
        conn.exec_driver_sql("DELETE FROM images WHERE path = '/a/b/gone.jpg'")
        conn.exec_driver_sql("UPDATE library_state SET generation = 7")
    engine.dispose()
    yield url, vectors


def test_0002_converts_rows_and_keeps_ids(old_database: tuple[str, np.ndarray]) -> None:
    url, vectors = old_database
    store = Store(url)
    try:
        states = store.file_states_under("/a")
        assert sorted(states) == sorted(PATHS[:-1])
        assert {path: state.id for path, state in states.items()} == {path: n + 1 for n, path in enumerate(PATHS[:-1])}
        assert [states[p].has_vector for p in PATHS[:-1]] == [True, True, True, True, False]
        assert states["/a/b/broken.jpg"].error == "truncated"
        assert (states["/a/b/1.jpg"].size, states["/a/b/1.jpg"].taken_at) == (100, datetime(2020, 1, 1))
        generation, ids, stored = store_vectors(store, DIM)
        assert generation == 7 and ids.tolist() == [1, 2, 3, 4]
        np.testing.assert_array_equal(stored, as_stored(vectors[:4]))
        stats = store.stats()
        assert (stats.indexed, stats.failed, stats.total_bytes, store.count_vectors()) == (4, 1, 406, 4)
        assert (stats.first_taken, stats.last_taken) == (datetime(2020, 1, 1), datetime(2020, 1, 3))
        assert sorted(store.ids_under("/a/b").tolist()) == [1, 2]
        with store.writer() as writer:  # the deleted id 6 is never given again: it may be in a FAISS file
            new_id = writer.upsert_image(FileMetadata("/a/new.jpg", 1, 1, "x"), vectors[5], "m")
        assert new_id == 7
    finally:
        store.close()


def test_0002_is_recorded_and_runs_once(old_database: tuple[str, np.ndarray]) -> None:
    url, _ = old_database
    Store(url).close()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            names = conn.exec_driver_sql("SELECT name FROM schema_migrations ORDER BY name").scalars().all()
            assert migrations.pending_migrations(conn) == []
            tables = sa.inspect(conn).get_table_names()
        assert names == sorted(name for name, _ in migrations.MIGRATIONS)
        assert "images_0002" not in tables
    finally:
        store.close()


def _plan(store: Store, statement: sa.Select) -> str:  # type: ignore[type-arg]
    compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": False})
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())).all()
    return " | ".join(str(row[-1]) for row in rows)


def test_folder_and_count_queries_use_indexes(tmp_path: Path) -> None:
    """The folder queries are a range of the unique path index, and counts read an index, not the rows."""
    from retrieval.storage import store as store_module
    from retrieval.storage.schema import ImageRow

    store = Store(f"sqlite:///{tmp_path / 'plan.db'}", create=True)
    store.ensure_created()
    try:
        under = sa.select(ImageRow.id).where(store_module._path_under("/a/b"))
        assert "USING COVERING INDEX ix_images_path (path>? AND path<?)" in _plan(store, under)
        count = sa.select(sa.func.count()).select_from(ImageRow).where(store_module._HAS_VECTOR)
        assert "USING COVERING INDEX ix_images_vector_" in _plan(store, count)
    finally:
        store.close()


# --- filters branch: 0004 ------------------------------------------------------------------------------


def test_0004_backfills_the_filter_columns_and_indexes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store as 0002 left it (rows without the filter columns) gains them filled from each row's path and
    facts, with their indexes, and the filters find its images; ids and everything else are kept."""
    url = f"sqlite:///{tmp_path / 'at0002.db'}"
    engine = sa.create_engine(url)
    rows = [  # path, width, height, make, model
        ("/a/1.JPG", 40, 30, "Apple", "iPhone 12"),
        ("/a/2.jpeg", 30, 40, "Canon", "Canon EOS 5D"),
        ("/a/3.png", 10, 10, None, None),
        ("/a/broken.tif", None, None, None, None),
    ]
    with monkeypatch.context() as patch, engine.begin() as conn:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        migrations.apply_migrations(conn)
        images = migrations._images_0002("images")
        for n, (path, width, height, make, model) in enumerate(rows, start=1):
            vector = None if path.endswith("broken.tif") else unit_vectors(1, n, DIM)[0].astype("<f2").tobytes()
            conn.execute(images.insert().values(
                id=n * 10, path=path, size=n, mtime_ns=n, width=width, height=height, camera_make=make,
                camera_model=model, vector=vector, has_vector=vector is not None, indexed_at=datetime(2024, 1, 1),
            ))  # fmt: skip
    engine.dispose()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT id, extension, camera, orientation FROM images ORDER BY id").all()
            indexes = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
        assert [tuple(row) for row in found] == [
            (10, "jpg", "Apple iPhone 12", "landscape"),
            (20, "jpg", "Canon EOS 5D", "portrait"),
            (30, "png", None, "square"),
            (40, "tif", None, None),
        ]
        names = {"ix_images_date", "ix_images_camera", "ix_images_extension", "ix_images_orientation"}
        assert names | {"ix_images_width", "ix_images_height"} <= indexes
        assert "ix_images_taken_at" not in indexes  # ix_images_date serves what it did
        assert store.filter_ids(queries.with_extensions(["jpg"])).tolist() == [10, 20]
        assert store.filter_ids(queries.with_extensions(["tif"])).tolist() == []  # no vector
        assert store.camera_names() == ["Apple iPhone 12", "Canon EOS 5D"]
    finally:
        store.close()
