"""How a store's SQLite file is opened and created, safely.

- An existing file is opened without the power to create one (`mode=rw`), so a missing file is never
  silently replaced by an empty one; read-only when it cannot be written (`mode=ro`, plus `immutable=1`
  when its folder cannot be written either, as no -wal/-shm file can be made there).
- A new file is built whole under a temporary name in the same folder (schema, WAL mode, mode 0600) and
  then hard-linked into place: no one ever sees a half-made or empty database, and when several processes
  create the same library at once, the first link wins and the others open the winner's file.
- Every transaction starts with an explicit BEGIN (the SQLAlchemy recipe for pysqlite), and a write
  transaction with BEGIN IMMEDIATE: the write lock is taken before the first read, so that a read-then-write
  transaction never fails half-way because another writer committed meanwhile.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from retrieval.errors import DamagedLibraryError

if TYPE_CHECKING:  # SQLAlchemy loads with an engine: the light read path (`reader`) opens files without it
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

SQLITE_HEADER = b"SQLite format 3\x00"
BEGIN_OPTION = "clipsearch_begin"
"""The execution option that makes a connection's transactions start with BEGIN IMMEDIATE."""
BUSY_TIMEOUT_MS = 30_000
PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600
ROOM_MARGIN = 1 << 20
"""Free bytes under which a failed write is put down to a full disk (a write needs pages, a few KB each)."""


def sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for any other database (and for SQLite in memory)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def damaged(path: Path, reason: str) -> DamagedLibraryError:
    return DamagedLibraryError(
        f"the library database {path} is damaged or not a clipsearch library ({reason}). Nothing was written to "
        "it. Restore it from a backup, or move it away and index your folders again to rebuild the library."
    )


def check_header(path: Path) -> None:
    """Refuse a file that cannot be a SQLite database at all (empty, or garbled from its first byte).

    SQLite reads the header, not `open(path)`: closing any descriptor of the file drops every POSIX lock this
    process holds on it, those of its other SQLite connections included (a server's long-lived reader then
    stops seeing commits); SQLite's own descriptors are closed with care for that."""
    if path.stat().st_size == 0:
        raise damaged(path, "the file is empty")
    try:
        connection = connect_file(path, read_only=True)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:  # other damage (a torn page, a lock) is for the full open to tell
        if "not a database" in str(exc):
            raise damaged(path, "the file is not a SQLite database") from exc


def writable(path: Path) -> bool:
    """Whether this process may write the file and make its -wal and -shm beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def connect_file(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to an existing file, never creating one: `mode=rw`, or `mode=ro` when `read_only` (plus
    `immutable=1` when its folder cannot be written either, as no -wal/-shm file can be made there)."""
    mode = "ro" if read_only else "rw"
    immutable = "&immutable=1" if read_only and not os.access(path.parent, os.W_OK) else ""
    uri = f"file:{quote(os.fsencode(path))}?mode={mode}{immutable}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def file_engine(path: Path, *, read_only: bool = False, echo: bool = False) -> Engine:
    """An engine on an existing file (or a fresh private temporary one while it is being created), which threads
    may share: a queue of connections, each used by one thread at a time (SQLAlchemy's pool for a file). The URL
    names no file (`creator` opens it), which alone would pick the in-memory pool, one connection per thread and
    five at most, closing other threads' connections under them: a server's request threads crashed it."""
    import sqlalchemy as sa
    from sqlalchemy.pool import QueuePool

    def connect() -> sqlite3.Connection:
        return connect_file(path, read_only=read_only)

    # A pool of connections handed out one thread at a time. The `sqlite://` URL alone would get
    # SingletonThreadPool, which closes other threads' connections past 5 threads, while they are in use:
    # a server's request threads then crash inside libsqlite3.
    engine = sa.create_engine("sqlite://", creator=connect, echo=echo, poolclass=QueuePool)
    install_sqlite_events(engine)
    return engine


def memory_engine() -> Engine:
    """One shared in-memory database: how a library that does not exist yet answers reads (it is empty)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    install_sqlite_events(engine)
    return engine


def install_sqlite_events(engine: Engine) -> None:
    from sqlalchemy import event

    event.listen(engine, "connect", _sqlite_connection)
    event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # pysqlite's own BEGIN is off: `_sqlite_begin` says which one
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    set_busy_timeout(dbapi_connection)


def set_busy_timeout(connection: sqlite3.Connection) -> None:
    """Wait up to BUSY_TIMEOUT_MS for another process's lock instead of failing at once."""
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def immediate(engine: Engine) -> Engine:
    """The same engine whose transactions take the write lock at BEGIN (SQLite; other backends lock rows)."""
    return engine.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})


def private_folder(folder: Path) -> None:
    """Make `folder` (0700 whatever the umask) and its missing parents; an existing folder keeps its mode."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=PRIVATE_FOLDER)
    except FileExistsError:
        return  # another process made it first
    os.chmod(folder, PRIVATE_FOLDER)


def create_file(path: Path, build: Callable[[Engine], None]) -> bool:
    """Create the database at `path` whole or not at all: `build` fills a private temporary file in the same
    folder, which is then linked into place. False when another process created `path` first."""
    private_folder(path.parent)
    staged = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    os.close(os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    try:
        os.chmod(staged, PRIVATE_FILE)  # whatever the umask; SQLite gives -wal and -shm the same mode
        _set_wal(staged)
        engine = file_engine(staged)
        try:
            build(engine)
        finally:
            engine.dispose()  # the last connection closes: the WAL is checkpointed and removed
        try:
            os.link(staged, path)
        except FileExistsError:
            return False
        _sync_folder(path.parent)
        return True
    finally:
        for leftover in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm")):
            leftover.unlink(missing_ok=True)


def out_of_room(path: Path) -> bool:
    """After a write to the database at `path` failed with an I/O error: whether the disk is full, or the
    database or its WAL reached this process's file-size limit (SQLite reports EFBIG as an I/O error)."""
    if shutil.disk_usage(path.parent).free < ROOM_MARGIN:
        return True
    try:
        import resource
    except ImportError:  # no file-size limits to hit on Windows
        return False
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    sizes = [os.path.getsize(name) for name in (path, Path(f"{path}-wal")) if os.path.exists(name)]
    return max(sizes, default=0) + ROOM_MARGIN > limit


def _set_wal(path: Path) -> None:
    """WAL is a property of the file, set once and kept by every client (outside any transaction)."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
