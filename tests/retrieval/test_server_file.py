"""The discovery file: written whole and private, read tolerantly (garbage is no server), removed only by the
process it names."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.config import SERVER_FILE_MAX_BYTES
from retrieval.server_file import (
    ServerInfo,
    process_alive,
    read_server_file,
    remove_server_file,
    server_file_path,
    server_url,
    write_server_file,
)


def info(pid: int | None = None, port: int = 8123) -> ServerInfo:
    return ServerInfo.now(host="127.0.0.1", port=port, library_id="abc123", version="1.2.3", pid=pid)


def test_written_private_and_read_back(tmp_path: Path) -> None:
    record = info()
    path = write_server_file(tmp_path, record)
    assert path == tmp_path / "server.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_server_file(tmp_path) == record
    data = json.loads(path.read_text())
    assert set(data) == {"pid", "host", "port", "url", "library_id", "started_at", "version"}
    assert (data["pid"], data["url"]) == (os.getpid(), "http://127.0.0.1:8123")
    assert [p.name for p in tmp_path.iterdir()] == ["server.json"]  # no temporary file left beside it


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe garbage",
        b"[1, 2]",
        b'{"pid": 1}',
        json.dumps(info().to_json() | {"pid": "12"}).encode(),
        json.dumps(info().to_json() | {"port": True}).encode(),
        json.dumps(info().to_json() | {"url": None}).encode(),
        b" " * SERVER_FILE_MAX_BYTES + json.dumps(info().to_json()).encode(),
    ],
    ids=["empty", "text", "bytes", "list", "partial", "pid-string", "port-bool", "url-null", "oversized"],
)
def test_garbage_is_no_server(tmp_path: Path, content: bytes) -> None:
    server_file_path(tmp_path).write_bytes(content)
    assert read_server_file(tmp_path) is None


def test_no_file_or_no_folder_is_no_server(tmp_path: Path) -> None:
    assert read_server_file(tmp_path) is None
    assert read_server_file(tmp_path / "missing") is None
    server_file_path(tmp_path).mkdir()  # a folder where the file should be
    assert read_server_file(tmp_path) is None


def test_removed_only_by_its_own_process(tmp_path: Path) -> None:
    write_server_file(tmp_path, info(pid=os.getpid() + 1))
    assert remove_server_file(tmp_path) is False  # another server's file stays
    assert read_server_file(tmp_path) is not None
    assert remove_server_file(tmp_path, pid=os.getpid() + 1) is True
    assert not server_file_path(tmp_path).exists()
    assert remove_server_file(tmp_path) is False  # nothing left to remove


def test_process_alive_tells_a_finished_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive(os.getpid())
    assert not process_alive(child.pid)
    assert not process_alive(0)
    assert not process_alive(-1)


def test_server_url_brackets_ipv6() -> None:
    assert server_url("127.0.0.1", 80) == "http://127.0.0.1:80"
    assert server_url("::1", 8000) == "http://[::1]:8000"
