"""`StoreReader`: the store's read calls that a query and `info` make, over the stdlib `sqlite3`, for a cold
command that should not spend a fifth of a second importing SQLAlchemy.

The schema is defined once, in SQLAlchemy (`schema.py`, `migrations.py`); this module reads the tables of the
schema version `READER_SCHEMA` names in a few plain statements and gives back the `Store`'s own record types.
`open_reader` hands out a reader only for a SQLite file that is already ours and current: anything else (no
file, a damaged or foreign one, a library an older or newer clipsearch made, which needs migrating or a
newer reader) gets None, and the caller opens the full `Store`, which migrates or refuses as always. The
reader never writes: it opens the file as the `Store` does (`mode=rw` while it can be written, so that a
WAL library being indexed is read like any other, `mode=ro` otherwise, plus `immutable` when its folder is
read-only too) and only ever runs SELECTs.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.storage.filter_queries import CAMERA_NAMES, FilterQuery, sqlite_params, with_vectors
from retrieval.storage.opening import SQLITE_HEADER, connect_file, set_busy_timeout, writable
from retrieval.storage.path_range import path_bounds
from retrieval.storage.records import ImageRecord, LibraryStats
from retrieval.storage.vectors import from_blobs

READER_SCHEMA = frozenset(
    {"0001_initial", "0002_byte_paths_half_vectors", "0003_roots", "0004_filter_columns", "0005_postgres_bigint_ids"}
)
"""The migrations whose schema the reader's SQL is written for: exactly those recorded, or no reader
(tests/retrieval/storage/test_reader.py pins this to `migrations.MIGRATIONS`)."""
_IN_CHUNK = 500


class StoreReads(Protocol):
    """The reads a query and `info` make: what both `Store` and `StoreReader` answer, identically."""

    def get_meta(self, key: str) -> str | None: ...

    def generation(self) -> int: ...

    def image_by_path(self, path: str) -> ImageRecord | None: ...

    def rows_by_ids(self, ids: Iterable[int]) -> dict[int, ImageRecord]: ...

    def vectors_by_ids(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]: ...

    def ids_under(self, folder: str) -> np.ndarray: ...

    def count_vectors(self) -> int: ...

    def filter_ids(self, query: FilterQuery) -> np.ndarray: ...

    def camera_names(self) -> list[str]: ...

    def stats(self, failure_limit: int = 20) -> LibraryStats: ...

    def close(self) -> None: ...


def _same(value: Any) -> Any:
    return value


def _path(value: Any) -> str:
    return os.fsdecode(bytes(value))


def _datetime(value: Any) -> datetime | None:
    """SQLAlchemy keeps a SQLite DateTime as `YYYY-MM-DD HH:MM:SS.ffffff`, which `fromisoformat` reads."""
    return None if value is None else datetime.fromisoformat(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "path": _path,
    "has_vector": bool,
    "taken_at": _datetime,
    "indexed_at": _datetime,
}
_RECORD_FIELDS = tuple(item.name for item in fields(ImageRecord))
_SELECT_RECORDS = f"SELECT {', '.join(_RECORD_FIELDS)} FROM images WHERE "


def _record(row: tuple[Any, ...]) -> ImageRecord:
    values = {name: _CONVERT.get(name, _same)(value) for name, value in zip(_RECORD_FIELDS, row, strict=True)}
    return ImageRecord(**values)


def open_reader(path: Path) -> StoreReader | None:
    """A reader of the SQLite library file at `path` when it is ours at the schema `READER_SCHEMA` names;
    None when the full `Store` must open it instead (missing, damaged, foreign, older or newer)."""
    try:
        if not path.is_file() or path.stat().st_size < len(SQLITE_HEADER):
            return None
        # Not `open(path)` to peek at the header: closing any descriptor of the file drops every POSIX lock
        # this process holds on it, the locks of its other SQLite connections included; a long-lived one (a
        # server's) then stops seeing commits. SQLite checks the header itself (`file is not a database`).
        connection = connect_file(path, read_only=not writable(path))
    except OSError:
        return None
    except sqlite3.Error:
        return None
    try:
        set_busy_timeout(connection)
        recorded = {name for (name,) in connection.execute("SELECT name FROM schema_migrations")}
    except sqlite3.Error:
        connection.close()
        return None
    if recorded != READER_SCHEMA:
        connection.close()
        return None
    return StoreReader(connection)


class StoreReader:
    """Reads of one SQLite library over one connection that never writes (see the module's docstring); like a
    command, it is used from one thread at a time."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        connection.isolation_level = None  # autocommit; `_snapshot` opens a read transaction where one is needed
        self._connection = connection

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement inside sees the same committed state."""
        self._connection.execute("BEGIN")
        try:
            yield self._connection
        finally:
            self._connection.execute("ROLLBACK")

    def get_meta(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def generation(self) -> int:
        return _generation(self._connection)

    def image_by_path(self, path: str) -> ImageRecord | None:
        row = self._connection.execute(_SELECT_RECORDS + "path = ?", (os.fsencode(path),)).fetchone()
        return None if row is None else _record(row)

    def rows_by_ids(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        wanted = [int(i) for i in ids]
        found: dict[int, ImageRecord] = {}
        with self._snapshot() as connection:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                for row in connection.execute(_SELECT_RECORDS + f"id IN ({marks})", chunk):
                    record = _record(row)
                    found[record.id] = record
        return found

    def vectors_by_ids(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their float32 vectors) of the `ids` that have a vector (`Store.vectors_by_ids`)."""
        wanted = [int(i) for i in ids]
        found: list[tuple[int, bytes]] = []
        with self._snapshot() as connection:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT id, vector FROM images WHERE id IN ({marks})"  # by the key; see Store.vectors_by_ids
                found += [(i, blob) for i, blob in connection.execute(sql, chunk) if blob is not None]
        return np.array([i for i, _ in found], dtype=np.int64), from_blobs([blob for _, blob in found], dim)

    def ids_under(self, folder: str) -> np.ndarray:
        """Ids of the rows with a vector under `folder`, ascending, through the path index (`Store.ids_under`)."""
        lower, upper = path_bounds(folder)
        sql, arguments = "SELECT id, has_vector FROM images WHERE path >= ?", [lower]
        if upper is not None:
            sql, arguments = sql + " AND path < ?", [lower, upper]
        rows = self._connection.execute(sql, arguments).fetchall()
        return np.sort(np.fromiter((image_id for image_id, has in rows if has), dtype=np.int64))

    def filter_ids(self, query: FilterQuery) -> np.ndarray:
        """The ids with a vector that a search filter's query selects, ascending (`Store.filter_ids`)."""
        with self._snapshot() as connection:
            rows = [row for sql, params in query.statements for row in connection.execute(sql, sqlite_params(params))]
        return with_vectors(rows)

    def camera_names(self) -> list[str]:
        """Every distinct camera name stored, ascending (`Store.camera_names`)."""
        return [str(name) for (name,) in self._connection.execute(CAMERA_NAMES)]

    def count_vectors(self) -> int:
        return int(self._connection.execute("SELECT count(*) FROM images WHERE has_vector = 1").fetchone()[0])

    def stats(self, failure_limit: int = 20) -> LibraryStats:
        """What `Store.stats` says, from the same indexes, in one read transaction."""
        dated = "SELECT taken_at FROM images WHERE has_vector = 1 AND taken_at IS NOT NULL ORDER BY taken_at"
        failed = "FROM images WHERE has_vector = 0 AND error IS NOT NULL"
        with self._snapshot() as connection:
            indexed, total_bytes = connection.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM images WHERE has_vector = 1"
            ).fetchone()
            first = connection.execute(dated + " LIMIT 1").fetchone()
            last = connection.execute(dated + " DESC LIMIT 1").fetchone()
            failures = connection.execute(
                f"SELECT path, error {failed} ORDER BY path LIMIT ?", (failure_limit,)
            ).fetchall()
            return LibraryStats(
                indexed=int(indexed),
                failed=int(connection.execute(f"SELECT count(*) {failed}").fetchone()[0]),
                total_bytes=int(total_bytes),
                first_taken=_datetime(first[0]) if first else None,
                last_taken=_datetime(last[0]) if last else None,
                failures=[(_path(path), str(error)) for path, error in failures],
                generation=_generation(connection),
            )


def _generation(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT generation FROM library_state WHERE id = 1").fetchone()
    return int(row[0] or 0) if row else 0
