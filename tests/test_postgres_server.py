"""The throwaway PostgreSQL cluster: loopback only, a fresh database per test, stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import postgres_server
from tests.fresh import ROOT
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
    """CLIPSEARCH_PG_BIN first, then PATH, then the newest installed version; none at all is a skip reason."""
    given, installed = tmp_path / "given", tmp_path / "installed"
    monkeypatch.setenv(postgres_server.PG_BIN_ENV, str(given))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PostgresUnavailable, match="PostgreSQL tests skipped: no initdb"):
        find_bin_dir(installed)
    for folder in (installed / "9" / "bin", installed / "15" / "bin", given):
        folder.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (folder / name).write_text("")
        if folder != given:
            assert find_bin_dir(installed) == folder  # the newest version, 15 after 9 (not "9" > "15")
    assert find_bin_dir(installed) == given


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


_WAITING_TEST = """
import os, time
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401


def test_waits_to_be_terminated(postgres_server, postgres_url):
    with open(os.environ["CLUSTER_FOLDER_FILE"], "w") as out:
        out.write(str(postgres_server.folder))
    time.sleep(120)
"""


@pytest.mark.slow
def test_a_terminated_session_stops_its_cluster(tmp_path: Path) -> None:
    """A test session killed with SIGTERM (a CI job's timeout) mid-test still stops its cluster and deletes its
    folder, as the end of a session does."""
    (tmp_path / "test_waiting.py").write_text(_WAITING_TEST)
    told = tmp_path / "folder.txt"
    env = os.environ | {"PYTHONPATH": str(ROOT), "CLUSTER_FOLDER_FILE": str(told)}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_waiting.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not told.exists() or not told.read_text():
            assert child.poll() is None and time.monotonic() < deadline, "the child never started its cluster"
            time.sleep(0.2)
        folder = Path(told.read_text())
        pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0, output
    assert not folder.exists() and _gone(pid), output
