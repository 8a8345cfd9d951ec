"""`StoreWriter`: the store's writes, named by intent, inside the one transaction `Store.writer()` opened."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrieval.storage.filter_queries import extension_of, filter_columns
from retrieval.storage.records import FileMetadata, copy_fields
from retrieval.storage.schema import ImageRow
from retrieval.storage.vectors import from_blob, to_blob

_IN_CHUNK = 500  # keeps IN (...) lists under every backend's parameter limit


def in_chunks(values: list[Any], size: int = _IN_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class StoreWriter:
    """Intent-named writes inside one transaction; `vectors_changed` tells the store to bump the generation."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.vectors_changed = False

    def _row_for(self, path: str) -> ImageRow:
        row = self.session.scalars(sa.select(ImageRow).where(ImageRow.path == path)).first()
        if row is None:
            row = ImageRow(path=path, has_vector=False)
            self.session.add(row)
        return row

    def upsert_image(self, meta: FileMetadata, vector: np.ndarray, model_key: str) -> int:
        """Insert or replace the row at `meta.path` with a freshly computed vector; returns its id."""
        row = self._row_for(meta.path)
        _apply(row, meta)
        row.vector, row.has_vector = to_blob(vector), True
        row.model_key = model_key
        row.error = None
        self.session.flush()
        self.vectors_changed = True
        return row.id

    def add_images(self, metas: Sequence[FileMetadata], vectors: np.ndarray, model_key: str) -> list[int]:
        """`upsert_image` for many files at once, returning their ids in order: paths the store does not
        hold yet go in with one multi-row INSERT (SQLAlchemy Core executemany), the others are replaced one by
        one. Everything stays inside this writer's transaction: a batch commits whole or not at all."""
        if len(metas) != len(vectors):
            raise ValueError(f"{len(metas)} files for {len(vectors)} vectors")
        paths = [meta.path for meta in metas]
        if len(set(paths)) != len(paths):
            raise ValueError("`metas` names the same path twice")
        existing = self._ids_of(paths)
        fresh = [position for position, path in enumerate(paths) if path not in existing]
        ids = [0] * len(metas)
        if fresh:
            now = _now()
            rows = [_new_row(metas[position], to_blob(vectors[position]), model_key, now) for position in fresh]
            table = cast(sa.Table, ImageRow.__table__)
            insert = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
            for position, new_id in zip(fresh, self.session.connection().execute(insert, rows).scalars(), strict=True):
                ids[position] = int(new_id)
            self.vectors_changed = True
        for position, path in enumerate(paths):
            if path in existing:
                ids[position] = self.upsert_image(metas[position], vectors[position], model_key)
        return ids

    def _ids_of(self, paths: list[str]) -> dict[str, int]:
        """The ids of those of `paths` that the store holds."""
        found: dict[str, int] = {}
        for chunk in in_chunks(paths):
            rows = self.session.execute(sa.select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(chunk)))
            found.update((path, image_id) for path, image_id in rows)
        return found

    def record_failure(self, path: str, size: int, mtime_ns: int, reason: str, content_hash: str | None) -> int:
        """Remember an unreadable file (so it is skipped until it changes) and drop any old vector."""
        row = self._row_for(path)
        if row.has_vector:
            self.vectors_changed = True
        row.size, row.mtime_ns, row.content_hash = size, mtime_ns, content_hash
        row.vector, row.has_vector, row.model_key, row.error, row.indexed_at = None, False, None, reason, _now()
        self.session.flush()
        return row.id

    def move_image(self, image_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        """The same content under a new path: keep the id and the vector, so the FAISS index is unchanged."""
        self.session.execute(
            sa.update(ImageRow)
            .where(ImageRow.id == image_id)
            .values(path=new_path, size=size, mtime_ns=mtime_ns, extension=extension_of(new_path))
        )

    def touch_image(self, image_id: int, size: int, mtime_ns: int) -> None:
        """The file's stat changed but not its content: record the new stat, keep the vector."""
        self.session.execute(sa.update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns))

    def copy_vector(self, meta: FileMetadata, source_id: int) -> int:
        """A new file whose content is already indexed elsewhere: reuse that vector and metadata."""
        source = self.session.get(ImageRow, source_id)
        if source is None or source.vector is None or source.model_key is None:
            raise LookupError(f"image {source_id} has no vector to copy")
        filled = copy_fields(
            FileMetadata, source, path=meta.path, size=meta.size, mtime_ns=meta.mtime_ns, content_hash=meta.content_hash
        )
        return self.upsert_image(filled, from_blob(source.vector), source.model_key)

    def delete_images(self, ids: Iterable[int]) -> int:
        deleted = 0
        for chunk in in_chunks([int(i) for i in ids]):
            result = self.session.execute(sa.delete(ImageRow).where(ImageRow.id.in_(chunk)))
            deleted += int(getattr(result, "rowcount", 0) or 0)
        if deleted:
            self.vectors_changed = True
        return deleted


def _new_row(meta: FileMetadata, blob: bytes, model_key: str, now: datetime) -> dict[str, Any]:
    """An image row's columns for a multi-row INSERT: every `FileMetadata` field, the vector, no error."""
    return {
        **_file_columns(meta),
        "vector": blob,
        "has_vector": True,
        "model_key": model_key,
        "error": None,
        "indexed_at": now,
    }


def _file_columns(meta: FileMetadata) -> dict[str, Any]:
    """Every field of `FileMetadata` (and no more, even from a record), by the name of its row column, and
    the filter columns derived from them."""
    columns = {item.name: getattr(meta, item.name) for item in fields(FileMetadata)}
    return columns | filter_columns(meta.path, meta.width, meta.height, meta.camera_make, meta.camera_model)


def _apply(row: ImageRow, meta: FileMetadata) -> None:
    """Write the file's columns (`_file_columns`) to the row."""
    for name, value in _file_columns(meta).items():
        setattr(row, name, value)
    row.indexed_at = _now()
