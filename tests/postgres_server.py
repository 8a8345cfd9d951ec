"""A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` on a free loopback port.

One cluster per test session (`postgres_server`), a fresh database per test (`postgres_url`), made by
`CREATE DATABASE ... TEMPLATE` from an empty template (a few milliseconds: the cluster runs without fsync).
The binaries are found through `CLIPSEARCH_PG_BIN`, then PATH, then /usr/lib/postgresql/*/bin (newest
first); where there are none, every PostgreSQL test skips with one reason that says how to get them.

initdb refuses to run as root, and tests run as root here and in CI: then the cluster runs as the
`postgres` system user (or `nobody`), dropped to in the child process, in a folder that user owns. It
listens on 127.0.0.1 only (and a private Unix socket folder) and trusts local connections: it holds
nothing but test data and lives only as long as the session. It is stopped at the end of the session,
after a failure, Ctrl-C or SIGTERM too (the fixture's `finally`, and `atexit` as a second net); only a
SIGKILL of the test process leaves it running.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_BIN_ENV = "CLIPSEARCH_PG_BIN"
SUPERUSER = "clipsearch"
TEMPLATE = "clipsearch_template"
_UNPRIVILEGED = ("postgres", "nobody")
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # a throwaway cluster: durability buys nothing, and creating databases gets fast
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
}
_TIMEOUT_S = 60


class PostgresUnavailable(Exception):
    """Why the PostgreSQL tests cannot run here (no binaries, no unprivileged user, no psycopg)."""


def find_bin_dir(installed: Path = Path("/usr/lib/postgresql")) -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres` (Debian installs them under `installed`/VERSION/bin),
    or PostgresUnavailable saying where it looked."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(installed.glob("*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable(
        f"PostgreSQL tests skipped: no initdb/pg_ctl/postgres found (looked in ${PG_BIN_ENV}, PATH and "
        "/usr/lib/postgresql/*/bin). Install PostgreSQL 15 (Debian: apt-get install postgresql-15) or point "
        f"{PG_BIN_ENV} at its bin folder."
    )


def _version_key(path: Path) -> tuple[int, str]:
    name = path.parent.name
    return (int(name) if name.isdigit() else -1, name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """(preexec_fn, uid, gid) that drop root to an unprivileged user for initdb; (None, None, None) if not root."""
    if os.geteuid() != 0:
        return None, None, None
    for name in _UNPRIVILEGED:
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return _dropper(user.pw_uid, user.pw_gid), user.pw_uid, user.pw_gid
    raise PostgresUnavailable(
        f"PostgreSQL tests skipped: running as root and none of the users {', '.join(_UNPRIVILEGED)} exists; "
        "initdb refuses to run as root"
    )


def _dropper(uid: int, gid: int) -> Callable[[], None]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


@dataclass
class PostgresServer:
    """A running throwaway cluster; `new_database()` gives a fresh empty database's SQLAlchemy URL."""

    bin_dir: Path
    folder: Path
    port: int = 0
    _drop: Callable[[], None] | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "sockets"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            preexec_fn=self._drop,  # only when root: initdb refuses root
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}\n{tail}")
        return done

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
        for attempt in range(3):  # another process may take the free port between probe and bind
            self.port = _free_port()
            options = " ".join(f"-c {key}={value}" for key, value in self._settings().items())
            try:
                self._run("pg_ctl", "start", "-w", "-t", str(_TIMEOUT_S), "-D", str(self.data_dir),
                          "-l", str(self.folder / "server.log"), "-o", options)  # fmt: skip
            except RuntimeError:
                if attempt == 2 or self.running:
                    raise
                continue
            break
        self._admin(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0 IS_TEMPLATE true')

    def _settings(self) -> dict[str, str]:
        return {**_SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'"}

    @property
    def running(self) -> bool:
        """Whether a postmaster runs on the data folder (also one that `pg_ctl start` gave up waiting for)."""
        return (self.data_dir / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data_dir))

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True) as c:
            c.execute(statement)  # type: ignore[call-overload]

    def new_database(self) -> tuple[str, str]:
        """(name, URL) of a fresh empty database."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PostgresServer:
    """A started cluster in a new temporary folder owned by the user it runs as. PostgresUnavailable if it
    cannot run here; the caller stops it (`stop_server`)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable(
            "PostgreSQL tests skipped: psycopg is not installed (pip install -e '.[postgres]')"
        ) from exc
    bin_dir = find_bin_dir()
    drop, uid, gid = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="clipsearch-pg-"))
    (folder / "sockets").mkdir(mode=0o700)
    if uid is not None and gid is not None:
        for path in (folder, folder / "sockets"):
            os.chown(path, uid, gid)
    server = PostgresServer(bin_dir, folder, _drop=drop)
    atexit.register(stop_server, server)
    try:
        server.start()
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PostgresServer) -> None:
    """Stop the cluster (if it runs) and delete its folder; safe to call twice."""
    try:
        server.stop()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's cluster, started on first use; the tests that need it skip loudly where it cannot run.
    While it runs, SIGTERM (a CI job's timeout) interrupts the session as Ctrl-C does, so the cluster is stopped
    then too, not left running."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_server(server)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's cluster, as a `postgresql+psycopg://` URL; dropped after."""
    name, url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(name)


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    """Each store backend in turn: a test that takes `store_url` or `library_url` runs on both."""
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL for a new store: a SQLite file not made yet, or a fresh PostgreSQL database."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def library_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """`Library(database_url=...)` for each backend: None (the SQLite file in the folder) or PostgreSQL."""
    return None if store_backend == "sqlite" else str(request.getfixturevalue("postgres_url"))


sqlite_only = pytest.mark.parametrize("store_backend", ["sqlite"])
"""For a test of SQLite itself (WAL mode, its file) among tests that run on both backends."""
