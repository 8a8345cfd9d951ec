"""One `Store` over SQLAlchemy: the library's source of truth, rows and vectors alike.

SQLite (WAL, so searches run while an index run writes) by default; any SQLAlchemy URL works, as the
queries stay in portable Core/ORM. Writes go through `Store.writer()`, one transaction per batch, which
also bumps the library's generation whenever vectors change so a stale FAISS file is detected.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from retrieval.storage.migrations import apply_migrations
from retrieval.storage.records import FileMetadata, ImageRecord, LibraryStats, copy_fields
from retrieval.storage.schema import ImageRow, MetaRow, StateRow

_IN_CHUNK = 500  # keeps IN (...) lists under every backend's parameter limit


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _chunks(values: list[Any], size: int = _IN_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def folder_prefix(folder: str) -> str:
    """`/a/b` -> `/a/b/`: a prefix that matches `/a/b/c.jpg` but not `/a/bc.jpg`."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def _path_under(folder: str) -> sa.ColumnElement[bool]:
    """Paths under `folder`, compared exactly: LIKE would ignore ASCII case in SQLite, and paths do not."""
    prefix = folder_prefix(folder)
    return sa.func.substr(ImageRow.path, 1, len(prefix)) == prefix


_RECORD_COLUMNS = tuple(getattr(ImageRow, item.name).label(item.name) for item in fields(ImageRecord))
"""An `ImageRecord`'s columns, by field name; the vector itself stays behind (only whether there is one)."""


def _records(session: Session, *where: sa.ColumnElement[bool]) -> list[ImageRecord]:
    return [copy_fields(ImageRecord, row) for row in session.execute(sa.select(*_RECORD_COLUMNS).where(*where))]


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.engine: Engine = sa.create_engine(url, echo=echo)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.engine.begin() as conn:
            apply_migrations(conn)

    def close(self) -> None:
        self.engine.dispose()

    # --- library facts -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._sessions() as session:
            row = session.get(MetaRow, key)
            return row.value if row else None

    def set_meta(self, values: dict[str, str]) -> None:
        with self._sessions.begin() as session:
            for key, value in values.items():
                session.merge(MetaRow(key=key, value=value))

    def generation(self) -> int:
        with self._sessions() as session:
            return _generation(session)

    # --- reads ---------------------------------------------------------------------------------
    def file_states_under(self, folder: str) -> dict[str, ImageRecord]:
        """The stored state of every file under `folder`, by path: what the scan compares with the disk."""
        with self._sessions() as session:
            return {record.path: record for record in _records(session, _path_under(folder))}

    def states_with_sizes(self, sizes: Iterable[int]) -> list[ImageRecord]:
        """Rows whose file size is one of `sizes`: the candidates a new file may have been moved from."""
        found: list[ImageRecord] = []
        with self._sessions() as session:  # one read transaction for every chunk
            for chunk in _chunks(sorted(set(sizes))):
                found += _records(session, ImageRow.size.in_(chunk), ImageRow.content_hash.is_not(None))
        return found

    def image_by_path(self, path: str) -> ImageRecord | None:
        with self._sessions() as session:
            found = _records(session, ImageRow.path == path)
        return found[0] if found else None

    def rows_by_ids(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        found: dict[int, ImageRecord] = {}
        with self._sessions() as session:  # one read transaction for every chunk
            for chunk in _chunks([int(i) for i in ids]):
                found.update((record.id, record) for record in _records(session, ImageRow.id.in_(chunk)))
        return found

    def ids_under(self, folder: str) -> np.ndarray:
        stmt = sa.select(ImageRow.id).where(_path_under(folder), ImageRow.vector.is_not(None)).order_by(ImageRow.id)
        with self._sessions() as session:
            return np.fromiter(session.scalars(stmt), dtype=np.int64)

    @contextmanager
    def vector_snapshot(
        self, dim: int, batch: int = 20_000
    ) -> Iterator[tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]]:
        """(generation, batches of (ids, vectors)), read from one snapshot, so they agree even while
        another process commits."""
        with self._snapshot() as conn:
            generation = int(conn.scalar(sa.select(StateRow.generation).where(StateRow.id == 1)) or 0)
            stmt = (
                sa.select(ImageRow.id, ImageRow.vector)
                .where(ImageRow.vector.is_not(None))
                .order_by(ImageRow.id)
                .execution_options(yield_per=batch)
            )

            def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for part in conn.execute(stmt).partitions(batch):
                    ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
                    blob = b"".join(bytes(row[1] or b"") for row in part)
                    yield ids, np.frombuffer(blob, dtype=np.float32).reshape(len(part), dim)

            yield generation, batches()

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A read-only connection whose statements all see one snapshot of the database.

        pysqlite opens a transaction only before writes, so each SELECT would see the latest commit;
        an explicit BEGIN pins the WAL snapshot at the first read. Other backends get REPEATABLE READ."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("BEGIN")
                yield conn
                conn.rollback()
        else:
            with self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                yield conn
                conn.rollback()

    def count_vectors(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(sa.select(sa.func.count(ImageRow.id)).where(ImageRow.vector.is_not(None))) or 0)

    def stats(self, failure_limit: int = 20) -> LibraryStats:
        with self._sessions() as session:
            indexed, total_bytes, first, last = session.execute(
                sa.select(
                    sa.func.count(ImageRow.id),
                    sa.func.coalesce(sa.func.sum(ImageRow.size), 0),
                    sa.func.min(ImageRow.taken_at),
                    sa.func.max(ImageRow.taken_at),
                ).where(ImageRow.vector.is_not(None))
            ).one()
            failed = session.scalar(sa.select(sa.func.count(ImageRow.id)).where(ImageRow.error.is_not(None)))
            failures = session.execute(
                sa.select(ImageRow.path, ImageRow.error)
                .where(ImageRow.error.is_not(None))
                .order_by(ImageRow.path)
                .limit(failure_limit)
            ).all()
            return LibraryStats(
                indexed=int(indexed),
                failed=int(failed or 0),
                total_bytes=int(total_bytes),
                first_taken=first,
                last_taken=last,
                failures=[(str(path), str(error)) for path, error in failures],
                generation=_generation(session),
            )

    # --- writes --------------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        """One transaction: everything written inside commits together or not at all."""
        with self._sessions.begin() as session:
            writer = StoreWriter(session)
            yield writer
            if writer.vectors_changed:
                session.execute(sa.update(StateRow).where(StateRow.id == 1).values(generation=StateRow.generation + 1))


def _generation(session: Session) -> int:
    return int(session.scalar(sa.select(StateRow.generation).where(StateRow.id == 1)) or 0)


class StoreWriter:
    """Intent-named writes inside one transaction; `vectors_changed` tells the store to bump the generation."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.vectors_changed = False

    def _row_for(self, path: str) -> ImageRow:
        row = self.session.scalars(sa.select(ImageRow).where(ImageRow.path == path)).first()
        if row is None:
            row = ImageRow(path=path)
            self.session.add(row)
        return row

    def upsert_image(self, meta: FileMetadata, vector: np.ndarray, model_key: str) -> int:
        """Insert or replace the row at `meta.path` with a freshly computed vector; returns its id."""
        row = self._row_for(meta.path)
        _apply(row, meta)
        row.vector = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        row.model_key = model_key
        row.error = None
        self.session.flush()
        self.vectors_changed = True
        return row.id

    def record_failure(self, path: str, size: int, mtime_ns: int, reason: str, content_hash: str | None) -> int:
        """Remember an unreadable file (so it is skipped until it changes) and drop any old vector."""
        row = self._row_for(path)
        if row.vector is not None:
            self.vectors_changed = True
        row.size, row.mtime_ns, row.content_hash = size, mtime_ns, content_hash
        row.vector, row.model_key, row.error, row.indexed_at = None, None, reason, _now()
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
        return self.upsert_image(filled, np.frombuffer(source.vector, dtype=np.float32), source.model_key)

    def delete_images(self, ids: Iterable[int]) -> int:
        deleted = 0
        for chunk in _chunks([int(i) for i in ids]):
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
