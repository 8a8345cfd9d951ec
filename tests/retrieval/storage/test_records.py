"""Tests of the one field mapping (`copy_fields`) and of every column's way through a real SQLite store:
metadata -> row -> record, and a donor row's facts -> a copy's row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from retrieval.decode import ImageInfo
from retrieval.storage.filter_queries import FILTER_COLUMNS
from retrieval.storage.records import FileMetadata, ImageRecord, copy_fields
from retrieval.storage.schema import ImageRow
from retrieval.storage.store import Store

MODEL_KEY = "test-model"
VECTOR = np.ones(4, dtype=np.float32)
FILE_OWN = {"path", "size", "mtime_ns", "content_hash"}  # a file's own stat and hash; the rest is the image's
STORE_ONLY = {"id", "has_vector", "error", "indexed_at"}  # what an ImageRecord adds to FileMetadata

EVERY_FIELD = FileMetadata(
    path="/p/every.jpg",
    size=4321,
    mtime_ns=1_700_000_000_123_456_789,
    content_hash="c" * 64,
    width=640,
    height=480,
    format="JPEG",
    taken_at=datetime(2019, 12, 31, 23, 59, 58),
    camera_make="Acme",
    camera_model="X1",
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'store.db'}", create=True)
    yield opened
    opened.close()


def _as_dict(value: object, names: set[str]) -> dict[str, object]:
    return {name: getattr(value, name) for name in sorted(names)}


def _names(cls: type) -> set[str]:
    return {item.name for item in fields(cls)}


# --- copy_fields -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    left: int
    right: str = "default"


def test_copy_fields_reads_each_field_by_name_and_takes_given_values_first() -> None:
    """Fields come from the source's attributes of the same name; given values win; extra attributes
    of the source are ignored."""

    class Source:
        left, right, extra = 1, "from source", "ignored"

    assert copy_fields(_Pair, Source()) == _Pair(1, "from source")
    assert copy_fields(_Pair, Source(), right="given") == _Pair(1, "given")


def test_copy_fields_refuses_missing_attributes_and_unknown_values() -> None:
    """A source lacking a field fails (even one with a default), and so does a given name the class
    does not have: a renamed field cannot be dropped silently."""

    class OnlyLeft:
        left = 1

    with pytest.raises(AttributeError):
        copy_fields(_Pair, OnlyLeft())
    with pytest.raises(TypeError):
        copy_fields(_Pair, OnlyLeft(), right="r", unknown=2)


# --- the records' shapes -----------------------------------------------------------------------------


def test_record_holds_every_stored_column_but_the_vector() -> None:
    """An ImageRecord has a field per column of the images table, except the vector and its model key
    (whether there is a vector is `has_vector`) and the columns derived for the search filters."""
    columns = {column.name for column in ImageRow.__table__.columns}
    assert _names(ImageRecord) == columns - {"vector", "model_key", *FILTER_COLUMNS} | {"has_vector"}
    assert _names(ImageRecord) == _names(FileMetadata) | STORE_ONLY
    assert _names(FileMetadata) == FILE_OWN | _names(ImageInfo)


def test_every_field_of_the_sample_is_set() -> None:
    """EVERY_FIELD gives each FileMetadata field a value other than its default, so the round trips
    below cover every column."""
    assert all(getattr(EVERY_FIELD, item.name) not in (None, item.default) for item in fields(FileMetadata))


# --- through a real store ----------------------------------------------------------------------------


def test_metadata_round_trips_every_column_through_each_read(store: Store) -> None:
    """Every FileMetadata field written by upsert_image comes back equal through each way of reading
    records; the store adds the id, has_vector, no error and the time it was indexed."""
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    with store.writer() as writer:
        image_id = writer.upsert_image(EVERY_FIELD, VECTOR, MODEL_KEY)
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    reads = [
        store.image_by_path(EVERY_FIELD.path),
        store.rows_by_ids([image_id])[image_id],
        store.file_states_under("/p")[EVERY_FIELD.path],
        store.states_with_sizes([EVERY_FIELD.size])[0],
    ]
    for record in reads:
        assert isinstance(record, ImageRecord)
        assert _as_dict(record, _names(FileMetadata)) == _as_dict(EVERY_FIELD, _names(FileMetadata))
        assert (record.id, record.has_vector, record.error) == (image_id, True, None)
        assert before <= record.indexed_at <= after
    assert len({record for record in reads}) == 1


def test_a_record_written_back_keeps_every_field(store: Store) -> None:
    """A record is a FileMetadata: upserting one under another path stores exactly its metadata fields."""
    with store.writer() as writer:
        writer.upsert_image(EVERY_FIELD, VECTOR, MODEL_KEY)
    record = store.image_by_path(EVERY_FIELD.path)
    assert record is not None
    with store.writer() as writer:
        second = writer.upsert_image(copy_fields(FileMetadata, record, path="/p/second.jpg"), VECTOR, MODEL_KEY)
    again = store.image_by_path("/p/second.jpg")
    assert again is not None and again.id == second
    assert _as_dict(again, _names(FileMetadata) - {"path"}) == _as_dict(EVERY_FIELD, _names(FileMetadata) - {"path"})


def test_copy_vector_takes_every_image_fact_from_the_donor(store: Store) -> None:
    """A copy keeps its own path, stat and hash and takes every other metadata field from the donor."""
    with store.writer() as writer:
        donor = writer.upsert_image(EVERY_FIELD, VECTOR, MODEL_KEY)
    own = FileMetadata("/q/copy.jpg", 99, 12345, "d" * 64)
    with store.writer() as writer:
        copy = writer.copy_vector(own, donor)
    record = store.image_by_path("/q/copy.jpg")
    assert record is not None and record.id == copy != donor
    assert _as_dict(record, FILE_OWN) == _as_dict(own, FILE_OWN)
    image_facts = _names(FileMetadata) - FILE_OWN
    assert _as_dict(record, image_facts) == _as_dict(EVERY_FIELD, image_facts)


def test_failure_row_reads_back_without_a_vector(store: Store) -> None:
    """A failed file's record says it has no vector, and carries the reason."""
    with store.writer() as writer:
        failed = writer.record_failure("/p/bad.jpg", 7, 7000, "truncated", None)
    record = store.rows_by_ids([failed])[failed]
    assert (record.id, record.path, record.has_vector, record.error) == (failed, "/p/bad.jpg", False, "truncated")
