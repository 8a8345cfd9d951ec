"""The discovery file `<library>/server.json`: where a running `clipsearch serve` answers for its library.

The server writes it (atomically, 0600) once its socket listens and removes it when it stops; a client
(`indexer.server_client`) reads it to send a query to the warm server instead of loading the model itself.
A file left by a server that died (`kill -9`, a crash) is *stale*: its process is gone, or its URL answers
for another library. Readers treat a stale or garbled file as no file; a new server replaces it.

Standard library only: a cold `clipsearch search` reads this before it decides to import anything heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from retrieval.atomic import write_atomic
from retrieval.config import SERVER_FILE, SERVER_FILE_MAX_BYTES


@dataclass(frozen=True)
class ServerInfo:
    """What the discovery file holds: the server's process, where it listens, the library it serves (its
    `library_id`, as `GET /api/status` names it), when it started (UTC, ISO) and the clipsearch version."""

    pid: int
    host: str
    port: int
    url: str
    library_id: str
    started_at: str
    version: str

    @classmethod
    def now(cls, *, host: str, port: int, library_id: str, version: str, pid: int | None = None) -> ServerInfo:
        """The record of this process (or `pid`) serving at `host`:`port` from now on."""
        return cls(
            pid=os.getpid() if pid is None else pid,
            host=host,
            port=port,
            url=server_url(host, port),
            library_id=library_id,
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            version=version,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ServerInfo | None:
        """The record `data` holds, or None unless it has every field with the right type (garbage is no
        record: a reader never fails on what another process, or a person, left in the file)."""
        if not isinstance(data, dict):
            return None
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data.get(field.name)
            wanted = int if field.type == "int" else str
            if type(value) is not wanted:  # exactly: a bool is an int, but no pid or port
                return None
            values[field.name] = value
        return cls(**values)


def server_url(host: str, port: int) -> str:
    """`http://HOST:PORT`, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def reachable_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`: a wildcard address on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def server_file_path(library_dir: str | Path) -> Path:
    return Path(library_dir) / SERVER_FILE


def write_server_file(library_dir: str | Path, info: ServerInfo) -> Path:
    """Write `info` as the library's discovery file, replacing any other (atomic, private: 0600)."""
    path = server_file_path(library_dir)
    write_atomic(path, json.dumps(info.to_json(), indent=1) + "\n", private=True)
    return path


def read_server_file(library_dir: str | Path) -> ServerInfo | None:
    """The library's discovery file, or None: no file, unreadable, too large, not JSON, or not a record."""
    try:
        with open(server_file_path(library_dir), "rb") as file:
            data = file.read(SERVER_FILE_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > SERVER_FILE_MAX_BYTES:
        return None
    try:
        return ServerInfo.from_json(json.loads(data))
    except ValueError:  # not UTF-8, not JSON
        return None


def live_server_file(library_dir: str | Path) -> ServerInfo | None:
    """The discovery record of the library in `library_dir` if its server process is still alive (its URL is
    not tried), or None: no file, an unreadable one, or a dead server's."""
    info = read_server_file(library_dir)
    return info if info is not None and process_alive(info.pid) else None


def remove_server_file(library_dir: str | Path, pid: int | None = None) -> bool:
    """Remove the discovery file if it is `pid`'s (default: this process's); another server's is left alone.
    True when a file was removed."""
    info = read_server_file(library_dir)
    if info is None or info.pid != (os.getpid() if pid is None else pid):
        return False
    with contextlib.suppress(FileNotFoundError):
        server_file_path(library_dir).unlink()
        return True
    return False


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user's counts: it still holds its port)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
