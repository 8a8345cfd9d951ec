"""The filter columns (extension, camera, orientation) as every write fills them, and the filter queries as
SQLite plans them: each statement a search of a covering index, never a scan of the images table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retrieval.dates import DateRange
from retrieval.storage import filter_queries as queries
from retrieval.storage.records import FileMetadata
from retrieval.storage.schema import ImageRow
from retrieval.storage.store import Store
from tests.libcheck import unit_vectors

DIM = 8


@pytest.mark.parametrize(
    ("name", "stored"),
    [("jpg", "jpg"), (".JPG", "jpg"), ("jpeg", "jpg"), ("JPE", "jpg"), ("tiff", "tif"), ("png", "png"),
     ("HEIC", "heic"), ("", None), (".", None), ("x" * 33, None), ("\udcff", None)],
)  # fmt: skip
def test_normal_extension(name: str, stored: str | None) -> None:
    assert queries.normal_extension(name) == stored


def test_extension_of_a_path() -> None:
    assert queries.extension_of("/a/b.c/IMG_1.JPEG") == "jpg"
    assert queries.extension_of("/a/b.c/README") is None
    assert queries.extension_of("/a/.hidden") is None


@pytest.mark.parametrize(
    ("make", "model", "name"),
    [("Apple", "iPhone 12", "Apple iPhone 12"), ("Canon", "Canon EOS R5", "Canon EOS R5"), ("  NIKON ", None, "NIKON"),
     (None, "X100V", "X100V"), (None, None, None), ("", " ", None), ("SONY", "sony a7", "sony a7")],
)  # fmt: skip
def test_camera_name_joins_make_and_model_once(make: str | None, model: str | None, name: str | None) -> None:
    assert queries.camera_name(make, model) == name


def test_orientation_of() -> None:
    assert [queries.orientation_of(w, h) for w, h in [(4, 3), (3, 4), (5, 5), (None, 4), (4, 0)]] == [
        "landscape", "portrait", "square", None, None,
    ]  # fmt: skip


def _columns(store: Store) -> dict[str, tuple[Any, ...]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(ImageRow.path, ImageRow.extension, ImageRow.camera, ImageRow.orientation))
        return {path: tuple(rest) for path, *rest in rows}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'library.db'}", create=True)
    yield opened
    opened.close()


def test_every_write_fills_the_filter_columns(store: Store) -> None:
    """Bulk adds, one-by-one upserts (new and replacing), copies and moves each leave the derived columns
    equal to what `filter_columns` makes of the row's path and facts."""
    vectors = unit_vectors(4, 0, DIM)
    with store.writer() as writer:
        writer.add_images(
            [
                FileMetadata("/p/a.JPEG", 1, 1, "a", 40, 30, None, None, "Apple", "iPhone 12"),
                FileMetadata("/p/b.png", 2, 2, "b", 30, 40, None, None, None, None),
            ],
            vectors[:2],
            "m",
        )
        new_id = writer.upsert_image(
            FileMetadata("/p/c.tiff", 3, 3, "c", 9, 9, None, None, "Canon", "Canon R5"), vectors[2], "m"
        )
        writer.upsert_image(FileMetadata("/p/b.png", 2, 5, "b2", 50, 10, None, None, "NIKON", "Z6"), vectors[3], "m")
        writer.copy_vector(FileMetadata("/q/copy.heic", 3, 4, "c"), new_id)
        writer.move_image(new_id, "/r/moved.JPG", 3, 6)
    assert _columns(store) == {
        "/p/a.JPEG": ("jpg", "Apple iPhone 12", "landscape"),
        "/p/b.png": ("png", "NIKON Z6", "landscape"),
        "/r/moved.JPG": ("jpg", "Canon R5", "square"),
        "/q/copy.heic": ("heic", "Canon R5", "square"),
    }


def test_filter_queries_read_covering_indexes_only(store: Store, tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of every filter statement (and the camera listing) on a library of 2000 varied rows:
    searches of an index holding every column it reads; no `SCAN images` (a full table or index read)."""
    metas = [
        FileMetadata(f"/p/{n}.{('jpg', 'png')[n % 2]}", n, n * 10**9, f"h{n}", 10 + n % 50, 30, None,
                     datetime(2020, 1, 1 + n % 28) if n % 3 else None, f"Make{n % 7}", f"M{n % 5}")
        for n in range(2000)
    ]  # fmt: skip
    with store.writer() as writer:
        writer.add_images(metas, unit_vectors(len(metas), 1, DIM), "m")
    statements = [
        statement
        for query in (
            queries.dated(DateRange.of("2020-01-05", "2020-01-09")),
            queries.dated(DateRange.of(None, "2020-01-09")),
            queries.dated(DateRange.of("2020-01-05", None)),
            queries.with_cameras(["Make1 M2", "Make3 M4"]),
            queries.with_extensions(["png"]),
            queries.with_orientation("portrait"),
            queries.at_least("width", 40),
            queries.at_least("height", 40),
        )
        for statement in query.statements
    ]
    connection = sqlite3.connect(tmp_path / "library.db")
    try:
        plans = [
            [row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", queries.sqlite_params(params))]
            for sql, params in statements
        ]
        cameras = [row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {queries.CAMERA_NAMES}")]
    finally:
        connection.close()
    for plan in plans:
        assert len(plan) == 1 and plan[0].startswith("SEARCH images USING COVERING INDEX ix_images_"), plan
    assert [line for line in cameras if "images" in line] == [
        "SEARCH images USING COVERING INDEX ix_images_camera",
        "SEARCH images USING COVERING INDEX ix_images_camera (camera>?)",
    ]
