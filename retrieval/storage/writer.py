"""`StoreWriter`: the store's writes, named by intent, inside the one transaction `Store.writer()` opened."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

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
            sa.update(ImageRow).where(ImageRow.id == image_id).values(path=new_path, size=size, mtime_ns=mtime_ns)
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


def _apply(row: ImageRow, meta: FileMetadata) -> None:
    """Write every field of `FileMetadata` (and no more, even from a record) to the row's column of that name."""
    for item in fields(FileMetadata):
        setattr(row, item.name, getattr(meta, item.name))
    row.indexed_at = _now()
