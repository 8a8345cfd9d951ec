"""Tests of `retrieval.storage.postgres`: what a store on a real PostgreSQL server does that SQLite does with
its file (read-only roles and servers, a full disk, an unreachable server, one writer at a time)."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from retrieval.errors import (
    DatabaseUnavailableError,
    DiskFullError,
    LibraryBusyError,
    LibraryReadOnlyError,
    WriterWaitWarning,
)
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store
from retrieval.storage.vectors import as_stored
from tests.libcheck import unit_vectors

DIM = 8
KEY = "test-model"


def _meta(n: int) -> FileMetadata:
    return FileMetadata(f"/pg/{n}.jpg", 100 + n, n, f"hash{n}")


def _vector(n: int) -> np.ndarray:
    return as_stored(unit_vectors(1, n, DIM))[0]


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    opened = Store(postgres_url, create=True)
    with opened.writer() as writer:
        writer.upsert_image(_meta(0), _vector(0), KEY)
    yield opened
    opened.close()


def _admin(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _as_role(url: str, role: str) -> str:
    return sa.make_url(url).set(username=role).render_as_string(hide_password=False)


@pytest.fixture
def reader_role(store: Store, postgres_url: str) -> Iterator[str]:
    """A login role that may read the store's tables and write none of them; the URL that logs in as it."""
    role = f"reader_{sa.make_url(postgres_url).database}"
    _admin(postgres_url, f'CREATE ROLE "{role}" LOGIN', f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    yield _as_role(postgres_url, role)
    _admin(postgres_url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_a_role_that_may_only_read_opens_a_read_only_store(reader_role: str) -> None:
    """Searching works; writing is refused before any statement, as for a read-only SQLite file."""
    store = Store(reader_role)
    try:
        assert store.read_only
        assert store.count_vectors() == 1 and store.image_by_path("/pg/0.jpg") is not None
        with pytest.raises(LibraryReadOnlyError, match="read-only role"), store.writer():
            pass
    finally:
        store.close()


def test_a_server_that_turns_read_only_refuses_the_batch_with_a_typed_error(store: Store, postgres_url: str) -> None:
    """Write access taken away while the store is open (a failover to a standby, a revoked grant): the batch
    fails with LibraryReadOnlyError and writes nothing."""
    database = sa.make_url(postgres_url).database
    maintenance = sa.make_url(postgres_url).set(database="postgres").render_as_string(hide_password=False)
    _admin(maintenance, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    store.engine.dispose()  # new sessions read the database's new default
    with pytest.raises(LibraryReadOnlyError, match="refuses writes"), store.writer() as writer:
        writer.upsert_image(_meta(1), _vector(1), KEY)
    _admin(maintenance, f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
    store.engine.dispose()
    assert store.count_vectors() == 1 and store.generation() == 1


def test_a_full_disk_on_the_server_is_disk_full_error(store: Store, postgres_url: str) -> None:
    """The server's `disk_full` (SQLSTATE 53100, raised here by a trigger as the server raises it when its disk
    fills) becomes DiskFullError and the batch is dropped whole. (psycopg 3 calls the code `sqlstate`; the
    store read psycopg 2's `pgcode` and let the raw error through.)"""
    _admin(
        postgres_url,
        "CREATE FUNCTION disk_full_now() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$",
        "CREATE TRIGGER disk_full_now BEFORE INSERT ON images FOR EACH ROW EXECUTE FUNCTION disk_full_now()",
    )
    with pytest.raises(DiskFullError, match="no room left"), store.writer() as writer:
        writer.touch_image(1, 5, 5)
        writer.add_images([_meta(1), _meta(2)], as_stored(unit_vectors(2, 1, DIM)), KEY)
    record = store.image_by_path("/pg/0.jpg")
    assert record is not None and record.size == 100
    assert store.count_vectors() == 1 and store.generation() == 1


def test_an_unreachable_server_is_a_typed_error_naming_the_parameter(postgres_url: str) -> None:
    """Nothing listens on the port: DatabaseUnavailableError, which names `database_url`, not a traceback."""
    with socket.socket() as probe:  # bound, never listening: the kernel refuses connections to it
        probe.bind(("127.0.0.1", 0))
        url = sa.make_url(postgres_url).set(port=probe.getsockname()[1], password="secret")
        with pytest.raises(DatabaseUnavailableError, match="cannot connect") as caught:
            Store(url.render_as_string(hide_password=False))
    assert "`database_url`" in str(caught.value) and "secret" not in str(caught.value)


def test_a_missing_driver_is_a_typed_error_naming_the_extra() -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"not installed \(pip install 'clipsearch\[postgres\]'\)"):
        Store("postgresql+pg8000://user@127.0.0.1:1/db")


def test_times_are_naive_utc_whatever_the_servers_time_zone(postgres_url: str) -> None:
    """A server whose sessions run in Tokyo time: the times clipsearch writes (when a migration ran, when a file
    was indexed) are UTC and a photo's EXIF time comes back as it went in. (A migration's time, written as an
    aware datetime, was shifted by the server into its zone: 9 hours ahead.)"""
    maintenance = sa.make_url(postgres_url).set(database="postgres").render_as_string(hide_password=False)
    _admin(maintenance, f'ALTER DATABASE "{sa.make_url(postgres_url).database}" SET timezone = \'Asia/Tokyo\'')
    store = Store(postgres_url, create=True)
    try:
        taken = datetime(2021, 7, 1, 23, 30, 15, 250000)
        with store.writer() as writer:
            writer.upsert_image(FileMetadata("/pg/t.jpg", 1, 1, "h", taken_at=taken), _vector(1), KEY)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW timezone").scalar() == "Asia/Tokyo"
            applied = conn.exec_driver_sql("SELECT applied_at FROM schema_migrations").scalars().all()
        record = store.image_by_path("/pg/t.jpg")
        assert record is not None and record.taken_at == taken
        for moment in [*applied, record.indexed_at]:
            assert abs(moment - now) < timedelta(minutes=5), (moment, now)
    finally:
        store.close()


def test_write_transactions_take_turns(store: Store, postgres_url: str) -> None:
    """A second writer (another process's store) waits for the open write transaction to end, as under SQLite's
    BEGIN IMMEDIATE, then sees its commit; a reader meanwhile is not held up."""
    other = Store(postgres_url)
    entered, done = threading.Event(), threading.Event()
    seen: list[int] = []

    def second_writer() -> None:
        with other.writer() as writer:
            entered.set()
            seen.append(len(other.file_states_under("/pg")))
            writer.upsert_image(_meta(2), _vector(2), KEY)
        done.set()

    try:
        with store.writer() as writer:
            writer.upsert_image(_meta(1), _vector(1), KEY)
            thread = threading.Thread(target=second_writer)
            thread.start()
            assert not entered.wait(1.0), "the second writer ran inside the first one's transaction"
            assert other.count_vectors() == 1
        assert done.wait(30)
        thread.join(30)
    finally:
        other.close()
    assert store.count_vectors() == 3 and store.generation() == 3


def test_an_index_run_waits_for_another_and_gives_up_after_its_wait(store: Store, postgres_url: str) -> None:
    """`exclusive_run` on one store (one machine) holds off another's until it ends; a run that waits longer
    than `wait_s` gets LibraryBusyError."""
    other = Store(postgres_url)
    try:
        with store.exclusive_run():
            started = time.monotonic()
            with (
                pytest.warns(WriterWaitWarning, match="waiting for it to finish"),
                pytest.raises(LibraryBusyError, match="perhaps on another machine"),
                other.exclusive_run(wait_s=0.3),
            ):
                pass
            assert time.monotonic() - started >= 0.3
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a free lock is taken without a word
            with other.exclusive_run(wait_s=0.3):
                pass
    finally:
        other.close()
