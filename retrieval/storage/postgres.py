"""A store on a PostgreSQL server: connecting, telling a read-only server or role, and the advisory locks
that stand in for what SQLite does with its file locks.

- Every write transaction first takes a transaction-level advisory lock (`WRITE_LOCK`), as SQLite's BEGIN
  IMMEDIATE takes the file's write lock: write transactions run one at a time, so a read-then-write batch
  never fails half-way because another writer committed the same path meanwhile.
- An index run holds a session-level advisory lock (`RUN_LOCK`) from start to end: runs from several
  machines into one store take turns. A run keeps its machine's FAISS file current by adding its own
  vectors to it; a second run writing at the same time would leave both files missing the other's vectors.
  The server drops the lock when the holder's connection ends (the process exits or dies).
- Schema migrations take `MIGRATION_LOCK`, so processes opening an old store at once migrate it once.

Advisory locks belong to one database, and one database holds one library: the keys are constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retrieval.errors import DatabaseUnavailableError, LibraryBusyError, WriterWaitWarning

MIGRATION_LOCK = 0x636C6970  # "clip"
WRITE_LOCK = 0x636C6971
RUN_LOCK = 0x636C6972
READ_ONLY_CODES = {"25006", "42501"}  # read_only_sql_transaction (a standby), insufficient_privilege
DISK_FULL_CODE = "53100"
_LOCK_TIMEOUT_CODE = "55P03"  # lock_not_available: `lock_timeout` ran out


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def pgcode(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error wrapped by SQLAlchemy (None for anything else)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def server_engine(url: sa.URL, *, echo: bool = False) -> Engine:
    """An engine for a database server's URL; a missing driver becomes `DatabaseUnavailableError`."""
    try:
        return sa.create_engine(url, echo=echo, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        extra = " (pip install 'clipsearch[postgres]')" if url.get_backend_name() == "postgresql" else ""
        raise DatabaseUnavailableError(
            f"the `database_url` {url.render_as_string(hide_password=True)} needs the Python module "
            f"{exc.name!r}, which is not installed{extra}",
            parameters=("database_url",),
        ) from exc


def unreachable(location: str, exc: sa.exc.DBAPIError) -> DatabaseUnavailableError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    return DatabaseUnavailableError(
        f"cannot connect to the database at {location} ({reason}). Check that the server is running and that "
        "`database_url` names its host, port, database, user and password.",
        parameters=("database_url",),
    )


def read_only(conn: Connection) -> bool:
    """Whether this session cannot write the store: a read-only server (a standby) or transaction default,
    or a role without the right to change the images table."""
    if conn.scalar(sa.text("SELECT current_setting('transaction_read_only')")) == "on":
        return True
    return not conn.scalar(sa.text("SELECT has_table_privilege('images', 'INSERT, UPDATE, DELETE')"))


def lock_transaction(conn: Connection, key: int) -> None:
    """Take advisory lock `key` until this transaction ends, waiting for its holder."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


@contextmanager
def run_lock(engine: Engine, location: str, wait_s: float) -> Iterator[None]:
    """Hold `RUN_LOCK` on a connection of its own while the block runs. If another run holds it, warn
    (`WriterWaitWarning`) and wait up to `wait_s` (`LibraryBusyError` after that). The connection stays idle
    outside any transaction meanwhile."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not conn.scalar(sa.select(sa.func.pg_try_advisory_lock(RUN_LOCK))):
            warnings.warn(
                WriterWaitWarning(
                    f"another clipsearch process (perhaps on another machine) is indexing into the database at "
                    f"{location}: waiting for it to finish (up to {wait_s:g} s)"
                ),
                stacklevel=3,
            )
            _wait_for_lock(conn, location, wait_s)
        try:
            yield
        finally:
            with suppress(sa.exc.DBAPIError):  # a connection that broke has lost the lock already
                conn.execute(sa.select(sa.func.pg_advisory_unlock(RUN_LOCK)))
    finally:
        conn.close()


def _wait_for_lock(conn: Connection, location: str, wait_s: float) -> None:
    """Take `RUN_LOCK`, waiting up to `wait_s` for its holder to let go."""
    conn.exec_driver_sql(f"SET lock_timeout = {max(1, int(wait_s * 1000))}")
    try:
        conn.execute(sa.select(sa.func.pg_advisory_lock(RUN_LOCK)))
    except sa.exc.DBAPIError as exc:
        if pgcode(exc) != _LOCK_TIMEOUT_CODE:
            raise
        raise LibraryBusyError(
            f"another clipsearch process (perhaps on another machine) has been indexing into the database at "
            f"{location} for more than {wait_s:g} s: try again when it has finished"
        ) from exc
    conn.exec_driver_sql("RESET lock_timeout")
