"""One `Store` over SQLAlchemy: the library's source of truth, rows and vectors alike.

SQLite (WAL, so searches run while an index run writes) by default; any SQLAlchemy URL works, as the
queries stay in portable Core/ORM. Writes go through `Store.writer()`, one transaction per batch, which
also bumps the library's generation whenever vectors change so a stale FAISS file is detected.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from retrieval.config import SHARED_WRITER_WAIT_S
from retrieval.errors import DamagedLibraryError, DiskFullError, LibraryNotFoundError, LibraryReadOnlyError
from retrieval.storage import postgres
from retrieval.storage.filter_queries import CAMERA_NAMES, FilterQuery, with_vectors
from retrieval.storage.migrations import apply_migrations, is_ours, pending_migrations
from retrieval.storage.opening import (
    check_header,
    create_file,
    damaged,
    file_engine,
    immediate,
    memory_engine,
    out_of_room,
    sqlite_file,
    writable,
)
from retrieval.storage.path_range import folder_prefix as folder_prefix  # where `indexer.scan` finds it
from retrieval.storage.path_range import path_bounds
from retrieval.storage.records import ImageRecord, LibraryStats, copy_fields
from retrieval.storage.roots import FolderContents, RootRecord, contents, list_roots, root_paths
from retrieval.storage.schema import ImageRow, MetaRow, StateRow
from retrieval.storage.vectors import from_blobs
from retrieval.storage.writer import StoreWriter, in_chunks

_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 10, 11, 13, 26
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _path_under(folder: str) -> sa.ColumnElement[bool]:
    """Paths under `folder` as a range of the unique path index, compared bytewise (so case-sensitive,
    and `%` or `_` are plain characters): `prefix <= path < successor(prefix)`."""
    prefix, upper = path_bounds(folder)
    lower = ImageRow.path >= sa.literal(prefix, sa.LargeBinary)
    return lower if upper is None else sa.and_(lower, ImageRow.path < sa.literal(upper, sa.LargeBinary))


_HAS_VECTOR = ImageRow.has_vector == sa.true()
_FAILED = sa.and_(ImageRow.has_vector == sa.false(), ImageRow.error.is_not(None))
_RECORD_COLUMNS = tuple(getattr(ImageRow, item.name).label(item.name) for item in fields(ImageRecord))
"""An `ImageRecord`'s columns, by field name; the vector itself stays behind (only whether there is one)."""


def _records(session: Session, *where: sa.ColumnElement[bool]) -> list[ImageRecord]:
    return [copy_fields(ImageRecord, row) for row in session.execute(sa.select(*_RECORD_COLUMNS).where(*where))]


def _text(sql: str, params: dict[str, object]) -> sa.TextClause:
    """`sql` with its datetime parameters bound as the backend stores a DateTime (filters branch)."""
    typed = [sa.bindparam(name, type_=sa.DateTime) for name, value in params.items() if isinstance(value, datetime)]
    return sa.text(sql).bindparams(*typed)


def _sqlite_code(exc: sa.exc.DBAPIError) -> int | None:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


class Store:
    """The store at `url`. A SQLite file must exist and be ours, unless `create`: then a missing file is
    created on the first write (until then the store reads as empty), so a failed first run leaves nothing."""

    def __init__(self, url: str, *, create: bool = False, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self.read_only = False
        self._echo = echo
        self._file = sqlite_file(self.url)
        self._pending = self._file is not None and not self._file.exists()
        if self._pending:
            if not create:
                raise LibraryNotFoundError(f"no library database at {self._file}")
            self._use(memory_engine())
            with self.engine.begin() as conn:
                apply_migrations(conn)
        else:
            self._open(create=create)

    @property
    def location(self) -> str:
        """Where the library's data is, as people read it: the SQLite file's folder, or the URL."""
        return str(self._file.parent) if self._file else self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def _use(self, engine: Engine) -> None:
        """Reads on PostgreSQL see one snapshot per session (REPEATABLE READ), as SQLite's read transactions
        do, so that the numbers of one `stats` agree; writes stay READ COMMITTED, one at a time (`postgres`)."""
        self.engine: Engine = engine
        reads = engine.execution_options(isolation_level="REPEATABLE READ") if postgres.is_postgres(engine) else engine
        self._sessions = sessionmaker(reads, expire_on_commit=False)
        self._write_sessions = sessionmaker(immediate(engine), expire_on_commit=False)

    def _open(self, *, create: bool) -> None:
        if self._file is not None:
            check_header(self._file)
            self.read_only = not writable(self._file)
            self._use(file_engine(self._file, read_only=self.read_only, echo=self._echo))
        else:
            self._use(postgres.server_engine(self.url, echo=self._echo))
        try:
            self._prepare(create=create and self._file is None)
        except sa.exc.DBAPIError as exc:
            self.engine.dispose()
            if self._file is not None and _sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise damaged(self._file, f"SQLite says: {exc.orig}") from exc
            if self._file is None and isinstance(exc, sa.exc.OperationalError):
                raise postgres.unreachable(self.location, exc) from exc
            raise
        except BaseException:
            self.engine.dispose()
            raise

    def _prepare(self, *, create: bool) -> None:
        """Refuse a database that is not ours; bring ours up to date. Only a new one gets our schema."""
        with self.engine.connect() as conn:
            ours = is_ours(conn)
            empty = not ours and not sa.inspect(conn).get_table_names()
            pending = pending_migrations(conn) if ours else []
            if ours and postgres.is_postgres(conn):
                self.read_only = postgres.read_only(conn)
        if not ours and not (create and empty):
            if self._file is not None:
                raise damaged(self._file, "it holds no clipsearch schema")
            if empty:
                raise LibraryNotFoundError(f"no library in the database at {self.location}")
            raise DamagedLibraryError(
                f"the database at {self.location} holds other tables and no clipsearch library: nothing was "
                "written to it; give an empty database or one that clipsearch made"
            )
        if pending and self.read_only:
            raise LibraryReadOnlyError(
                f"the library at {self.location} is read-only and was made by an older clipsearch: its database "
                f"needs these upgrades first: {', '.join(pending)}. Open it once with write access."
            )
        if pending or not ours:
            self._migrate(self.engine)

    @staticmethod
    def _migrate(engine: Engine) -> None:
        """Apply pending migrations holding the write lock from the start (SQLite BEGIN IMMEDIATE, a
        PostgreSQL advisory lock): processes opening the same old or new library migrate it once."""
        with immediate(engine).begin() as conn:
            if postgres.is_postgres(conn):
                postgres.lock_transaction(conn, postgres.MIGRATION_LOCK)
            apply_migrations(conn)

    def ensure_created(self) -> None:
        """Create the library's database (and its folder) now if it does not exist yet; writes do this first."""
        if not self._pending:
            return
        assert self._file is not None
        create_file(self._file, self._migrate)  # False: another process created it first, which is as good
        self.engine.dispose()
        self._pending = False
        self._open(create=False)

    def ensure_writable(self) -> None:
        """Raise `LibraryReadOnlyError` if the store cannot be written; create a new one's database now."""
        if self.read_only:
            why = f"no permission to write {self._file}" if self._file else "a standby server, or a read-only role"
            raise LibraryReadOnlyError(
                f"the library at {self.location} is read-only (a read-only mount, or {why}): searching it works, "
                "indexing it needs write access"
            )
        self.ensure_created()

    @contextmanager
    def _typed_disk_errors(self) -> Iterator[None]:
        """A full disk (or quota, or file-size limit) while writing becomes `DiskFullError`; a server that
        refuses writes (a standby, a role without the right) `LibraryReadOnlyError`."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            code = _sqlite_code(exc)
            if postgres.pgcode(exc) in postgres.READ_ONLY_CODES:
                raise LibraryReadOnlyError(
                    f"the database at {self.location} refuses writes ({exc.orig}): searching it works, indexing "
                    "it needs a role that may write its tables on a primary server"
                ) from exc
            full = code == _SQLITE_FULL or postgres.pgcode(exc) == postgres.DISK_FULL_CODE
            if not (full or (code == _SQLITE_IOERR and self._file is not None and out_of_room(self._file))):
                raise
            raise self._disk_full(str(exc.orig)) from exc
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            raise self._disk_full(str(exc)) from exc

    def _disk_full(self, reason: str) -> DiskFullError:
        return DiskFullError(
            f"no room left to write the library at {self.location} (a full disk, a quota or a file-size limit: "
            f"{reason}). The library is intact: "
            "everything committed before is kept and only the batch being written was dropped. Free some space "
            "and run the index again to finish."
        )

    # --- library facts -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._sessions() as session:
            row = session.get(MetaRow, key)
            return row.value if row else None

    def set_meta(self, values: dict[str, str]) -> None:
        self.ensure_writable()
        with self._typed_disk_errors(), self._write_sessions.begin() as session:
            self._lock_writes(session)
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
            for chunk in in_chunks(sorted(set(sizes))):
                found += _records(session, ImageRow.size.in_(chunk), ImageRow.content_hash.is_not(None))
        return found

    def image_by_path(self, path: str) -> ImageRecord | None:
        with self._sessions() as session:
            found = _records(session, ImageRow.path == path)
        return found[0] if found else None

    def rows_by_ids(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        found: dict[int, ImageRecord] = {}
        with self._sessions() as session:  # one read transaction for every chunk
            for chunk in in_chunks([int(i) for i in ids]):
                found.update((record.id, record) for record in _records(session, ImageRow.id.in_(chunk)))
        return found

    def vectors_by_ids(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their float32 vectors) of the `ids` that have a vector, in one read transaction: what a
        large index re-ranks its candidates with (retrieval/large_index.py). The query names only the key:
        with `has_vector` in the WHERE clause SQLite walked a (has_vector, ...) index, 2.3-2.9 s for 100 ids
        of 1M rows instead of milliseconds (docs/capacity.md)."""
        found: list[tuple[int, bytes]] = []
        with self._sessions() as session:
            for chunk in in_chunks([int(i) for i in ids]):
                stmt = sa.select(ImageRow.id, ImageRow.vector).where(ImageRow.id.in_(chunk))
                found += [(int(i), bytes(blob)) for i, blob in session.execute(stmt) if blob is not None]
        return np.array([i for i, _ in found], dtype=np.int64), from_blobs([blob for _, blob in found], dim)

    def ids_under(self, folder: str) -> np.ndarray:
        """Ids of the rows with a vector under `folder`, ascending. The query names only the path range, so
        every planner walks the path index: with `has_vector` in the WHERE clause SQLite preferred the
        (has_vector, ...) indexes and read every row (94 ms for 100 of 100k rows, 0.2 ms by path)."""
        stmt = sa.select(ImageRow.id, ImageRow.has_vector).where(_path_under(folder))
        with self._sessions() as session:
            rows = session.execute(stmt).all()
        return np.sort(np.fromiter((image_id for image_id, has in rows if has), dtype=np.int64))

    # --- filters branch: the search filters' queries (`filter_queries.py`) -----------------------
    def filter_ids(self, query: FilterQuery) -> np.ndarray:
        """The ids with a vector that a search filter's query selects, ascending, read in one transaction."""
        with self._sessions() as session:
            rows = [row for sql, params in query.statements for row in session.execute(_text(sql, params), params)]
        return with_vectors(rows)

    def camera_names(self) -> list[str]:
        """Every distinct camera name stored, ascending, one index probe each."""
        with self._sessions() as session:
            return [str(name) for name in session.execute(sa.text(CAMERA_NAMES)).scalars()]

    # --- end filters branch
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
                .where(_HAS_VECTOR)
                .order_by(ImageRow.id)
                .execution_options(yield_per=batch)
            )

            def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for part in conn.execute(stmt).partitions(batch):
                    ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
                    yield ids, from_blobs([row[1] for row in part], dim)

            yield generation, batches()

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A read-only connection whose statements all see one snapshot of the database.

        On SQLite every transaction starts with an explicit BEGIN (`opening`), which pins the WAL snapshot at
        the first read. Other backends get REPEATABLE READ."""
        options = {} if self.engine.dialect.name == "sqlite" else {"isolation_level": "REPEATABLE READ"}
        with self.engine.connect().execution_options(**options) as conn:
            yield conn
            conn.rollback()

    def count_vectors(self) -> int:
        """Rows with a vector, counted on the (has_vector, size) index: the blobs are never read."""
        with self._sessions() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(ImageRow).where(_HAS_VECTOR)) or 0)

    def stats(self, failure_limit: int = 20) -> LibraryStats:
        """Counts and sums from the (has_vector, size) index, dates from (has_vector, taken_at), failures
        from the rows without a vector: no query reads the vectors."""
        with self._sessions() as session:  # one read transaction: the numbers agree with each other
            indexed, total_bytes = session.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(ImageRow.size), 0)).where(_HAS_VECTOR)
            ).one()
            dated = sa.select(ImageRow.taken_at).where(_HAS_VECTOR, ImageRow.taken_at.is_not(None)).limit(1)
            first = session.scalar(dated.order_by(ImageRow.taken_at))
            last = session.scalar(dated.order_by(ImageRow.taken_at.desc()))
            failed = session.scalar(sa.select(sa.func.count()).select_from(ImageRow).where(_FAILED))
            failures = session.execute(
                sa.select(ImageRow.path, ImageRow.error).where(_FAILED).order_by(ImageRow.path).limit(failure_limit)
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

    # --- rootswatch branch: recorded roots and what a folder holds (queries in `retrieval.storage.roots`)
    def roots(self) -> list[RootRecord]:
        with self._sessions() as session:
            return list_roots(session)

    def root_paths(self) -> list[str]:
        with self._sessions() as session:
            return root_paths(session)

    def folder_contents(self, folder: str) -> FolderContents:
        with self._sessions() as session:
            return contents(session, folder)

    # --- end rootswatch branch

    # --- writes --------------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        """One transaction: everything written inside commits together or not at all. It holds the write
        lock from its start; a full disk raises `DiskFullError` and leaves the earlier commits as they are."""
        self.ensure_writable()
        with self._typed_disk_errors(), self._write_sessions.begin() as session:
            self._lock_writes(session)
            writer = StoreWriter(session)
            yield writer
            if writer.vectors_changed:
                session.execute(sa.update(StateRow).where(StateRow.id == 1).values(generation=StateRow.generation + 1))

    def _lock_writes(self, session: Session) -> None:
        """PostgreSQL: one write transaction at a time, as SQLite's BEGIN IMMEDIATE (`postgres.WRITE_LOCK`). On
        SQLite the transaction starts at its first statement, as before."""
        if postgres.is_postgres(self.engine):
            postgres.lock_transaction(session.connection(), postgres.WRITE_LOCK)

    @contextmanager
    def exclusive_run(self, wait_s: float = SHARED_WRITER_WAIT_S) -> Iterator[None]:
        """Held by an index run from start to end: on a shared (PostgreSQL) store, runs from several machines
        take turns, each waiting up to `wait_s` for the others (`postgres.run_lock`). A SQLite store is one
        machine's, and `Library.writer_lock` alone guards it."""
        if not postgres.is_postgres(self.engine):
            yield
            return
        with postgres.run_lock(self.engine, self.location, wait_s):
            yield


def _generation(session: Session) -> int:
    return int(session.scalar(sa.select(StateRow.generation).where(StateRow.id == 1)) or 0)
