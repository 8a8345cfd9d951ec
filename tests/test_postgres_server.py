"""The throwaway PostgreSQL cluster: loopback only, a fresh database per test, stopped at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import postgres_server
from tests.postgres_server import PostgresServer, PostgresUnavailable, find_bin_dir


def _scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(query).scalar()
    finally:
        engine.dispose()


def test_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    url = postgres_server.url()
    assert _scalar(url, "SHOW listen_addresses") == "127.0.0.1"
    assert str(_scalar(url, "SELECT version()")).startswith("PostgreSQL ")


def test_each_test_gets_a_fresh_empty_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE left_behind (x int)")
    finally:
        engine.dispose()


def test_the_previous_tests_table_is_not_here(postgres_url: str) -> None:
    """Runs after the test above: its table went with its database."""
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_binaries_are_found_through_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CLIPSEARCH_PG_BIN wins; a folder without the binaries is passed over, and none at all is a skip reason."""
    monkeypatch.setenv(postgres_server.PG_BIN_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres_server, "_version_key", lambda path: (0, ""))
    monkeypatch.setattr(postgres_server.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(PostgresUnavailable, match="PostgreSQL tests skipped: no initdb"):
        find_bin_dir()
    for name in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / name).write_text("")
    assert find_bin_dir() == tmp_path


@pytest.mark.slow
def test_a_stopped_server_leaves_nothing_running() -> None:
    """start_server/stop_server: the postmaster is gone and the folder deleted afterwards."""
    try:
        server = postgres_server.start_server()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    postgres_server.stop_server(server)
    postgres_server.stop_server(server)  # twice is harmless
    assert not server.folder.exists()
    assert _gone(pid)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (here pid 1 does not reap the orphaned postmaster)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
