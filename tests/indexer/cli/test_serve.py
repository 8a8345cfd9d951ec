"""`clipsearch serve`: its argument errors through CliRunner; a real server in a subprocess (slow) for start-up,
the discovery file's life cycle, a second server refused, and `clipsearch search` answered by it (the CLI
process never loads the model) with the very output of a local search, or searching locally when the
server is gone or serves another library."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.cli.serve import is_loopback, listen
from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.reference import reference_spec
from retrieval.model.specs import ModelSpec
from retrieval.server_file import ServerInfo, read_server_file, server_file_path, write_server_file
from tests import imagefactory
from tests.clirunner import assert_clean_failure, invoke
from tests.fresh import ROOT, run_python

pytest.importorskip("fastapi", reason="the `serve` extra (FastAPI, uvicorn) is not installed")

START_TIMEOUT = 180


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.10", "example.org", ""]))


def test_connections_are_accepted_without_nagle() -> None:
    """A reply's head and body are written apart: with Nagle's algorithm on, the body waited for the client's
    delayed ACK, 40 ms of every request (measured: 44-48 ms for a 404 before, under 1 ms after)."""
    with listen("127.0.0.1", 0) as server, socket.create_connection(server.getsockname()[:2]) as _client:
        accepted, _ = server.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_port_in_use_is_one_line_naming_port(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        output = assert_clean_failure(invoke("serve", "--library", tmp_path, "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is in use: choose another with --port" in output
    assert len(output.strip().splitlines()) == 1
    assert not server_file_path(tmp_path).exists()


def test_another_host_warns_before_anything(tmp_path: Path) -> None:
    """The warning comes first (here the port is taken, so nothing listens on every interface meanwhile)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # bound, never listening: no one can reach it
        port = taken.getsockname()[1]
        result = invoke("serve", "--library", tmp_path, "--host", "0.0.0.0", "--port", str(port))
    output = assert_clean_failure(result)
    assert "warning: serving on 0.0.0.0, not loopback: anyone who can reach this address" in output
    assert "--port" in output


def test_bad_ports_and_hosts_are_refused(tmp_path: Path) -> None:
    assert "--port" in assert_clean_failure(invoke("serve", "--library", tmp_path, "--port", "70000"), code=2)
    output = assert_clean_failure(invoke("serve", "--library", tmp_path, "--host", "192.0.2.1"), code=2)
    assert "'192.0.2.1' is no address of this machine" in output and "--host" in output  # TEST-NET-1


def test_without_fastapi_it_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an install without the extra finds
    output = assert_clean_failure(invoke("serve", "--library", tmp_path))
    assert 'pip install "clipsearch[serve]"' in output


def test_a_missing_library_is_a_clear_error(tmp_path: Path) -> None:
    output = assert_clean_failure(invoke("serve", "--library", tmp_path / "none", "--port", "0"))
    assert "no library at" in output and "--library" in output


# --- a real server (subprocess) ------------------------------------------------------------------------------


class Server:
    """`clipsearch serve --port 0` on `library` in a subprocess, running once its first line says where."""

    def __init__(self, library: Path, *args: str) -> None:
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-c", "from indexer.cli import main; main()", "serve", "--library", str(library)]
        self.process = subprocess.Popen(
            [*command, "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.line = self.process.stdout.readline()  # the tests' own timeout bounds this
        assert self.line.startswith(f"serving {library} at http://127.0.0.1:"), self.line + self.stop()[1]
        self.port = int(self.line.rsplit(":", 1)[1].split()[0])

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send `sig`; the exit status and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


@pytest.fixture(scope="module")
def reference_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 photos indexed with the reference model (ONNX, as a search here would run it)."""
    root = tmp_path_factory.mktemp("serve")
    with Library(root / "library", create=True) as library:
        encoder = library.encoder(reference_spec(), device="cpu")
        index_folders(library, encoder, [str(imagefactory.photo_folder(root / "photos"))], workers=1)
        return library.directory


@pytest.fixture(scope="module")
def server(reference_library: Path) -> Iterator[Server]:
    running = Server(reference_library)
    yield running
    running.stop()


RUN_CLI = """
import json, sys
from indexer.cli import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = ("torch", "open_clip", "onnxruntime", "sqlalchemy", "PIL", "fastapi", "uvicorn", "starlette", "httpx")
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


def cli(*args: str | Path) -> tuple[str, list[str]]:
    """`clipsearch ARGS` in a fresh interpreter: its stdout and the heavy modules it imported."""
    result = run_python(RUN_CLI, *map(str, args))
    outcome = json.loads(result.stderr.splitlines()[-1])
    assert outcome["code"] in (0, None), result.stdout + result.stderr
    return result.stdout, outcome["heavy"]


SEARCHES = [
    ("two red circles", "-k", "5"),  # the default relevance cutoff hides these photos' matches: no lines
    ("two red circles", "-k", "5", "--min-relevance", "0"),
    ("two red circles", "-k", "5", "--json", "--min-relevance", "0"),
    ("a blue square", "--not", "stripes", "-k", "4", "--sort", "-date", "--min-relevance", "0", "--paths"),
]


@pytest.mark.slow
@pytest.mark.parametrize("words", SEARCHES, ids=lambda words: " ".join(words))
def test_search_goes_through_the_server_and_prints_what_a_local_search_prints(
    server: Server, reference_library: Path, words: tuple[str, ...]
) -> None:
    served, heavy = cli("search", *words, "--library", reference_library)
    assert heavy == []  # no model, no ONNX Runtime, no SQLAlchemy, no web stack: the server answered
    local, heavy_locally = cli("search", *words, "--library", reference_library, "--local")
    assert "onnxruntime" in heavy_locally  # the comparison is with a real local search
    assert served == local
    assert served.strip() or "--min-relevance" not in words


@pytest.mark.slow
def test_the_discovery_file_names_the_server(server: Server, reference_library: Path) -> None:
    path = server_file_path(reference_library)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = read_server_file(reference_library)
    assert info is not None
    assert (info.pid, info.host, info.port) == (server.process.pid, "127.0.0.1", server.port)
    with Library(reference_library, reading=True) as library:
        assert info.library_id == library.library_id()


@pytest.mark.slow
def test_a_second_server_on_the_library_is_refused(server: Server, reference_library: Path) -> None:
    result = run_python(
        "from indexer.cli import main; main()", "serve", "--library", str(reference_library), "--port", "0"
    )
    assert result.returncode == 1
    assert f"a clipsearch server already serves {reference_library} at http://127.0.0.1:{server.port}" in result.stderr
    assert read_server_file(reference_library).pid == server.process.pid  # type: ignore[union-attr]


@pytest.mark.slow
def test_search_goes_local_when_the_server_serves_another_library(
    server: Server, reference_library: Path, tmp_path: Path, photos: Path
) -> None:
    """Library B's discovery file names A's (live) server: B's search must print B's results, from B."""
    other = tmp_path / "other"
    with Library(other, create=True) as library:
        index_folders(library, library.encoder(reference_spec(), device="cpu"), [str(photos)], workers=1)
    write_server_file(other, read_server_file(reference_library))  # type: ignore[arg-type]
    words = ("two red circles", "-k", "3", "--paths", "--min-relevance", "0")
    found, heavy = cli("search", *words, "--library", other)
    assert "onnxruntime" in heavy  # searched locally
    assert len(found.splitlines()) == 3
    assert all(line.startswith(f"{photos}{os.sep}") for line in found.splitlines())


@pytest.mark.slow
def test_life_cycle_stale_file_replaced_removed_on_sigterm_then_search_goes_local(
    tmp_path: Path, tiny_spec: ModelSpec, photos: Path
) -> None:
    """A stale file (its process gone, as after a kill -9) does not stop a new server, which replaces it;
    SIGTERM stops the server with status 0 and removes the file; a search afterwards runs locally."""
    directory = tmp_path / "library"
    with Library(directory, create=True) as library:
        index_folders(library, library.encoder(tiny_spec, device="cpu"), [str(photos)], workers=1)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    write_server_file(
        directory, ServerInfo.now(host="127.0.0.1", port=9, library_id="x", version="0", pid=finished.pid)
    )
    server = Server(directory)
    info = read_server_file(directory)
    assert info is not None and info.pid == server.process.pid
    code, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "stopped" in err
    assert not server_file_path(directory).exists()
    found, heavy = cli("search", "red", "--library", directory, "-k", "2", "--min-relevance", "0", "--paths")
    assert len(found.splitlines()) == 2 and "onnxruntime" in heavy


@pytest.mark.slow
def test_ctrl_c_stops_with_status_0(tmp_path: Path, tiny_spec: ModelSpec, photos: Path) -> None:
    directory = tmp_path / "library"
    with Library(directory, create=True) as library:
        index_folders(library, library.encoder(tiny_spec, device="cpu"), [str(photos)], workers=1)
    server = Server(directory)
    code, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert not server_file_path(directory).exists()
