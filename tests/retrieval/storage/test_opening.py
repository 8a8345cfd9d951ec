"""Opening and creating a library's database (retrieval.storage.opening through Store and Library): damaged and
foreign files are refused untouched, a read-only library is read and refuses writes, creation is private,
atomic and lazy, and a full disk is a typed error that keeps what was committed.

Real SQLite files throughout. Tests run as root, which ignores permission bits, so the read-only tests fork a
child that drops to `nobody` before it opens anything."""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import multiprocessing
import os
import resource
import signal
import sqlite3
import stat
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from indexer.pipeline import index_folders
from retrieval.config import DATABASE_FILE
from retrieval.errors import (
    DamagedLibraryError,
    DiskFullError,
    LibraryBusyError,
    LibraryNotFoundError,
    LibraryReadOnlyError,
)
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.search import Searcher
from retrieval.storage import migrations
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store
from tests import imagefactory
from tests.libcheck import unit_vectors

_FORK = multiprocessing.get_context("fork")  # children inherit the imports: nothing left to read as nobody
_RACE = multiprocessing.get_context("forkserver")
"""Racing runs fork from a clean single-threaded server that has this module imported: forking the test
process itself (its SQLAlchemy pools, torch and faiss threads) can leave a child stuck on a lock that another
thread held at the fork, which then holds the database's write lock until the others time out."""
_NOBODY = 65534
DIM = 8


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _meta(path: str, size: int = 100) -> FileMetadata:
    return FileMetadata(path=path, size=size, mtime_ns=size, content_hash="hash")


def _write_rows(store: Store, start: int, count: int, dim: int = DIM) -> None:
    with store.writer() as writer:
        for n, vector in enumerate(unit_vectors(count, start, dim), start):
            writer.upsert_image(_meta(f"/p/{n:06d}.jpg", n), vector, "model")


def _siblings(database: Path) -> set[str]:
    return {path.name for path in database.parent.iterdir()}


# --- damaged and foreign files are refused, untouched ---------------------------------------------------------


def _zero_byte(database: Path) -> None:
    database.write_bytes(b"")


def _garbled(database: Path) -> None:
    database.write_bytes(np.random.default_rng(0).bytes(8192))


def _garbled_after_header(database: Path) -> None:
    """A real library whose first page (the schema) was overwritten after the 100-byte file header."""
    with Library(database.parent, create=True) as library:
        library.create()
    with open(database, "r+b") as handle:
        handle.seek(100)
        handle.write(np.random.default_rng(1).bytes(4000))


def _foreign(database: Path) -> None:
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    connection.execute("INSERT INTO notes (text) VALUES ('not a clipsearch library')")
    connection.commit()
    connection.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_zero_byte, "the file is empty"),
        (_garbled, "not a SQLite database"),
        (_garbled_after_header, "SQLite says"),
        (_foreign, "no clipsearch schema"),
    ],
)
def test_damaged_or_foreign_database_is_refused_untouched(
    damage: Callable[[Path], None], reason: str, tmp_path: Path
) -> None:
    """A zero-byte, garbled or foreign file is a DamagedLibraryError naming the file and the way back, with
    or without `create`; its bytes stay as they were and no -wal or -shm file appears beside it."""
    folder = tmp_path / "library"
    folder.mkdir()
    database = folder / DATABASE_FILE
    damage(database)
    before, files = _digest(database), _siblings(database)
    for create in (False, True):
        with pytest.raises(DamagedLibraryError) as caught:
            Library(folder, create=create)
        message = str(caught.value)
        assert str(database) in message and reason in message
        assert "backup" in message and "index your folders again" in message
    assert _digest(database) == before
    assert _siblings(database) == files
    if damage is _foreign:  # nothing was written: not even WAL mode, which would change the file's header
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_foreign_database_at_a_url_is_refused(tmp_path: Path) -> None:
    """The same rule for a database named by URL: tables that are not ours are refused, an empty database
    is a library only when asked to create one."""
    foreign = tmp_path / "foreign.db"
    _foreign(foreign)
    with pytest.raises(DamagedLibraryError, match="holds no clipsearch schema"):
        Library(tmp_path / "lib", database_url=f"sqlite:///{foreign}")


# --- a new library: lazy, private, atomic ------------------------------------------------------------------------


def test_a_new_library_appears_on_its_first_write_and_is_private(tmp_path: Path) -> None:
    """Under umask 022, opening with `create` makes nothing; the first write makes the folder 0700 and the
    database, its -wal and -shm and the writer lock 0600. Nothing is left under a temporary name."""
    folder = tmp_path / "new" / "library"
    old = os.umask(0o022)
    try:
        with Library(folder, create=True) as library:
            assert library.store.count_vectors() == 0
            assert not (tmp_path / "new").exists()
            _write_rows(library.store, 0, 3)
            with library.writer_lock():
                modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
            folder_mode = stat.S_IMODE(folder.stat().st_mode)
    finally:
        os.umask(old)
    assert folder_mode == 0o700
    assert modes == {name: 0o600 for name in ("library.db", "library.db-wal", "library.db-shm", "index.lock")}


def test_an_existing_library_keeps_its_modes(tmp_path: Path) -> None:
    """Modes someone chose for an existing library are left alone by opening and writing."""
    folder = tmp_path / "library"
    with Library(folder, create=True) as library:
        library.create()
    os.chmod(folder, 0o750)
    os.chmod(folder / DATABASE_FILE, 0o640)
    with Library(folder) as library:
        _write_rows(library.store, 0, 2)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE((folder / DATABASE_FILE).stat().st_mode) == 0o640


def _first_run(folder: str, spec: ModelSpec, start: Any, n: int) -> None:
    """Child process: what a first `index` run does to the store, from a fresh folder, all children at once."""
    encoder = Encoder(spec, device="cpu")
    start.wait()
    try:
        with Library(folder, create=True) as library:
            library.bind_model(encoder)
            with library.writer_lock():
                _write_rows(library.store, n, 1)
    except LibraryBusyError:
        os._exit(3)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


@pytest.mark.slow
def test_racing_first_runs_create_one_library(tmp_path: Path, tiny_encoder: Encoder) -> None:
    """Four first-ever runs racing on a fresh folder, fifteen times: each one writes or is told another
    process is indexing; the library is created once (each migration recorded once, the model once)."""
    _RACE.set_forkserver_preload([__name__])
    for trial in range(15):
        folder = tmp_path / f"race-{trial}"
        start = _RACE.Event()
        children = [
            _RACE.Process(target=_first_run, args=(str(folder), tiny_encoder.spec, start, n)) for n in range(4)
        ]
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(timeout=120)
        codes = [child.exitcode for child in children]
        assert set(codes) <= {0, 3} and 0 in codes, f"trial {trial}: exit codes {codes}"
        with Library(folder) as library:
            assert library.store.count_vectors() == codes.count(0)
            assert library.recorded_identity() == tiny_encoder.identity.key
            with library.store.engine.connect() as conn:
                names = conn.exec_driver_sql("SELECT name FROM schema_migrations").scalars().all()
        assert sorted(names) == sorted(name for name, _ in migrations.MIGRATIONS)
        assert _siblings(folder / DATABASE_FILE) <= {"library.db", "library.db-wal", "library.db-shm", "index.lock"}


# --- a read-only library ---------------------------------------------------------------------------------------


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="clipsearch-ro-"))
    os.chmod(folder, 0o755)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    folder.rmdir()


def _as_nobody(target: Callable[[], Any]) -> Any:
    """Run `target` in a forked child that is `nobody`; give back what it returned, or raise what it raised.

    A fork copies only the forking thread, so a lock another thread of this (long, many-threaded) test process
    held at that moment stays held in the child for ever. Once in a CI run a child hung that way, with nothing
    to show where. So a child that has not answered after CHILD_STUCK_AFTER seconds writes every thread's stack
    to a file and exits; the stacks come back as a warning and the target is run once more in a new child. A
    target that hangs every time still fails, with its stacks."""
    stacks = []
    for _ in range(2):
        kind, value = _as_nobody_once(target)
        if kind != "stuck":
            break
        stacks.append(value)
        warnings.warn(f"a forked child hung; its threads were:\n{value}", stacklevel=2)
    if kind == "stuck":
        raise AssertionError("the child hung twice; its threads were:\n" + "\n".join(stacks))
    if kind == "raised":
        raise AssertionError(f"the child raised {value[0]}: {value[1]}")
    return value


CHILD_STUCK_AFTER = 60


def _as_nobody_once(target: Callable[[], Any]) -> tuple[str, Any]:
    receiver, sender = _FORK.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="clipsearch-child-stacks-", suffix=".txt", delete=False) as dump:
        dump_path = Path(dump.name)

    def child(sender: Connection) -> None:
        with dump_path.open("w") as stacks:  # opened before dropping to nobody
            faulthandler.dump_traceback_later(CHILD_STUCK_AFTER, exit=True, file=stacks)
            try:
                faiss.omp_set_num_threads(1)  # the parent's OpenMP threads did not survive the fork
                os.setgid(_NOBODY)
                os.setuid(_NOBODY)
                sender.send(("ok", target()))
            except BaseException as exc:
                sender.send(("raised", (type(exc).__name__, str(exc))))
            finally:
                faulthandler.cancel_dump_traceback_later()
                sender.close()
                os._exit(0)

    process = _FORK.Process(target=child, args=(sender,))
    process.start()
    sender.close()
    try:
        if receiver.poll(CHILD_STUCK_AFTER + 60):
            with contextlib.suppress(EOFError):  # EOF: the child exited unanswered, faulthandler's exit after the dump
                return receiver.recv()
        return "stuck", dump_path.read_text() or "(no stacks written)"
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        dump_path.unlink(missing_ok=True)


@pytest.fixture
def read_only_library(shared_folder: Path, tiny_encoder: Encoder) -> Path:
    """An indexed library that `nobody` may read but not write (folder 0755, files 0644, owned by root)."""
    folder, photos = shared_folder / "library", imagefactory.photo_folder(shared_folder / "photos", top=4)
    with Library(folder, create=True) as library:
        index_folders(library, tiny_encoder, [str(photos)], workers=1)
    for path in [folder, *folder.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("reading", [False, True], ids=["store", "light-reader"])
@pytest.mark.parametrize("folder_writable", [False, True], ids=["read-only-folder", "read-only-file"])
def test_read_only_library_is_searched_and_refuses_to_index(
    read_only_library: Path, tiny_encoder: Encoder, folder_writable: bool, reading: bool
) -> None:
    """As a user without write permission: facts and search work (no -wal or -shm is made beside a folder we
    may not write), through the full store and through the light reader (`reading`); an index run and a direct
    write raise LibraryReadOnlyError; nothing on disk changes."""
    folder = read_only_library
    if folder_writable:
        os.chmod(folder, 0o777)
    database, photos = folder / DATABASE_FILE, folder.parent / "photos"
    before, images = _digest(database), len(list(photos.rglob("*.*")))

    def reads_and_writes() -> dict[str, Any]:
        seen: dict[str, Any] = {"may_write": os.access(database, os.W_OK)}
        with Library(folder, reading=reading) as library:
            seen["reader"] = type(library.reads).__name__
            seen["indexed"] = library.facts(0).stats.indexed
            query = library.reads.image_by_path(str(photos / "img00.png"))
            seen["hits"] = [r.path for r in Searcher(library, tiny_encoder, gpu="never").search_image(
                str(photos / "img00.png"), k=2, include_self=True)]  # fmt: skip
            seen["query_found"] = query is not None
            try:
                index_folders(library, tiny_encoder, [str(photos)], workers=1)
            except LibraryReadOnlyError as exc:
                seen["index"] = str(exc)
            try:
                with library.store.writer() as writer:
                    writer.touch_image(1, 1, 1)
            except LibraryReadOnlyError as exc:
                seen["writer"] = str(exc)
        return seen

    seen = _as_nobody(reads_and_writes)
    assert seen["may_write"] is False, "the child could write: the check below would prove nothing"
    assert seen["reader"] == ("StoreReader" if reading else "Store")
    assert seen["indexed"] == images and seen["query_found"] and seen["hits"][0] == str(photos / "img00.png")
    for name in ("index", "writer"):
        assert f"the library at {folder} is read-only" in seen.get(name, ""), name
    assert _digest(database) == before
    if not folder_writable:
        derived = [*folder.glob("*.faiss"), *folder.glob("relevance-sample-*.npy")]  # both written with the index
        assert _siblings(database) == {DATABASE_FILE, "index.lock", *(p.name for p in derived)}


@pytest.mark.slow
def test_read_only_library_that_needs_a_migration_says_so(shared_folder: Path) -> None:
    """A library made by an older clipsearch cannot be upgraded read-only: the error names the pending steps."""
    folder = shared_folder / "old"
    folder.mkdir()
    engine = sa.create_engine(f"sqlite:///{folder / DATABASE_FILE}")
    with engine.begin() as conn:
        migrations._RECORDED.create(conn)
        migrations._0001_initial(conn)
        conn.execute(migrations._RECORDED.insert().values(name="0001_initial", applied_at=sa.func.now()))
    engine.dispose()
    for path in [folder, *folder.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def open_it(reading: bool) -> str:
        try:
            Library(folder, reading=reading)  # the light reader leaves an old library to the store
        except LibraryReadOnlyError as exc:
            return str(exc)
        return "opened"

    for reading in (False, True):
        message = _as_nobody(lambda: open_it(reading))  # noqa: B023  (called at once)
        assert f"the library at {folder} is read-only" in message and "0002_byte_paths_half_vectors" in message


# --- a full disk ------------------------------------------------------------------------------------------------


def test_full_database_is_a_typed_error_that_keeps_the_commits(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (here: a page limit on every connection) inside `writer()` is a
    DiskFullError naming the library; the batches committed before are intact and the store still works."""
    url = f"sqlite:///{tmp_path / DATABASE_FILE}"
    store = Store(url, create=True)
    _write_rows(store, 0, 10, dim=512)
    generation = store.generation()
    store.engine.dispose()
    pages = os.path.getsize(tmp_path / DATABASE_FILE) // 4096 + 8
    event.listen(store.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages}"))
    with pytest.raises(DiskFullError) as caught:
        _write_rows(store, 10, 500, dim=512)
    assert f"the library at {tmp_path}" in str(caught.value) and "intact" in str(caught.value)
    store.close()
    reopened = Store(url)
    assert (reopened.count_vectors(), reopened.generation()) == (10, generation)
    _write_rows(reopened, 10, 5, dim=512)  # room again: the run finishes
    assert reopened.count_vectors() == 15
    reopened.close()


def _write_past_the_limit(url: str, limit: int) -> None:
    """Child process: write batches under a file-size limit (SIGXFSZ ignored, so writes fail with EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = Store(url)
    try:
        for batch in range(1, 100):
            _write_rows(store, batch * 100, 100, dim=512)
    except DiskFullError:
        os._exit(5)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


@pytest.mark.slow
def test_file_size_limit_is_a_disk_full_error(tmp_path: Path) -> None:
    """A real limit on file size (RLIMIT_FSIZE) hit while writing is a DiskFullError; the batches committed
    before it are all there, the database passes SQLite's integrity check, and writing resumes."""
    url = f"sqlite:///{tmp_path / DATABASE_FILE}"
    store = Store(url, create=True)
    _write_rows(store, 0, 100, dim=512)
    store.close()
    child = _FORK.Process(target=_write_past_the_limit, args=(url, 1_000_000))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 5
    reopened = Store(url)
    count = reopened.count_vectors()
    assert count % 100 == 0 and 100 < count < 10_000  # whole batches only, some of them written in the child
    with reopened.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    _write_rows(reopened, 100_000, 100, dim=512)
    assert reopened.count_vectors() == count + 100
    reopened.close()


def test_a_store_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    """Without `create`, a missing file is LibraryNotFoundError and stays missing (SQLite would make it)."""
    with pytest.raises(LibraryNotFoundError):
        Store(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
