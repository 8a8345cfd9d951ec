"""A search through the library's running `clipsearch serve`, when there is one: the warm server answers in
milliseconds where a cold process would load the model and the index first.

Standard library only (`http.client`, `json`): the discovery file (`retrieval.server_file`) says where the
server listens; `GET /api/status` proves it serves this very library (the same folder and `library_id`) and is
ready; `POST /api/search` sends the query in the JSON form of `retrieval.query_codec`, and the reply counts
only if its generation is the one the store holds now, read here: what a local search would search (a
server's own view of the store may lag behind it). Anything else (no file, a dead process, a refused or slow
connection, another library, an error reply, an answer that does not parse) gives None, and the caller
searches locally, as if no server ran: the server is a shortcut, never a new way to fail.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.config import SERVER_CONNECT_TIMEOUT, SERVER_READ_TIMEOUT
from retrieval.errors import ClipsearchError
from retrieval.server_file import ServerInfo, live_server_file, reachable_host

if TYPE_CHECKING:
    from retrieval.query import Query
    from retrieval.results import SearchResult

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class _NotServed(Exception):
    """The server cannot answer this query as a local search would: search locally."""


@dataclass(frozen=True)
class ServerTimeouts:
    """How long to wait for the server's socket to accept, and then for each answer (seconds)."""

    connect: float = SERVER_CONNECT_TIMEOUT
    read: float = SERVER_READ_TIMEOUT


def search_via_server(
    library_dir: str | Path,
    query: Query,
    *,
    model: str | None = None,
    timeouts: ServerTimeouts = ServerTimeouts(),
) -> list[SearchResult] | None:
    """The results of `query` from the server running on the library in `library_dir`, exactly as a local
    `Searcher.search` gives them, or None when there is no such server or it cannot answer (search locally).
    `model`: the model the caller needs, as the server's status names it (None: the library's own, which is
    the only one a server on it can serve). A query with an image file part is not sent (its file would have
    to be uploaded, and then an indexed file would not be recognised as itself): None."""
    if any(part.image is not None for part in query.parts):
        return None
    directory = Path(library_dir)
    info = live_server_file(directory)
    if info is None:
        return None
    try:
        with _Connection(info, timeouts) as connection:
            status = connection.call("GET", "/api/status")
            _check_status(status, info, directory, model)
            reply = connection.call("POST", "/api/search", _query_json(query))
        if reply.get("generation") != _store_generation(directory):
            raise _NotServed("the server answered from another generation than the store's")
        from retrieval.results import SearchResult

        return [SearchResult.from_json(item) for item in reply["results"]]
    except (_NotServed, ClipsearchError, OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return None
    except sqlite3.Error:  # the store cannot be read here: the local search says why
        return None


def server_for(library_dir: str | Path, *, timeouts: ServerTimeouts = ServerTimeouts()) -> ServerInfo | None:
    """The discovery record of a live server on the library in `library_dir` (its process is alive and its
    URL answers with the record's `library_id`), or None: no file, or a stale one."""
    info = live_server_file(library_dir)
    if info is None:
        return None
    try:
        with _Connection(info, timeouts) as connection:
            status = connection.call("GET", "/api/status")
    except (_NotServed, OSError, http.client.HTTPException, ValueError):
        return None
    return info if isinstance(status, dict) and status.get("library_id") == info.library_id else None


def _check_status(status: dict[str, Any], info: ServerInfo, directory: Path, model: str | None) -> None:
    """The server serves the library in `directory` (the one the discovery file names), is ready, serves its
    store's current generation, and the model asked for."""
    if status.get("library_id") != info.library_id:
        raise _NotServed("another library answers at the recorded URL")
    if not _same_folder(status.get("library"), directory):
        raise _NotServed("the server serves another folder")
    if status.get("ready") is not True:
        raise _NotServed("the server is not ready")
    if status.get("generation") != status.get("store_generation"):
        raise _NotServed("the server has not caught up with the store yet")
    if model is not None and status.get("model") != model:
        raise _NotServed("the server runs another model")


def _store_generation(directory: Path) -> int | None:
    """The store's generation now, read here (a server's own view may lag: what it answers is checked against
    what a local search would see); None for a library the light reader cannot read."""
    from retrieval.config import DATABASE_FILE
    from retrieval.storage.reader import open_reader

    reader = open_reader(directory / DATABASE_FILE)
    if reader is None:
        return None
    try:
        return reader.generation()
    finally:
        reader.close()


def _same_folder(served: object, directory: Path) -> bool:
    if not isinstance(served, str):
        return False
    try:
        return os.path.samefile(served, directory)
    except OSError:
        return False


def _query_json(query: Query) -> dict[str, Any]:
    from retrieval.query_codec import query_to_json

    return query_to_json(query)


class _Connection:
    """One keep-alive HTTP connection to the server: a short timeout to connect, a longer one to answer."""

    def __init__(self, info: ServerInfo, timeouts: ServerTimeouts) -> None:
        self._connection = http.client.HTTPConnection(reachable_host(info.host), info.port, timeout=timeouts.connect)
        self._read_timeout = timeouts.read

    def __enter__(self) -> _Connection:
        self._connection.connect()
        sock = self._connection.sock
        if isinstance(sock, socket.socket):
            sock.settimeout(self._read_timeout)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._connection.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON object the server answers to `method path` (with `body` as JSON); _NotServed for any
        status but 200 or an answer that is not a JSON object."""
        payload = None if body is None else json.dumps(body).encode()
        self._connection.request(method, path, body=payload, headers=_JSON)
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise _NotServed(f"{method} {path} answered {response.status}")
        answer = json.loads(data)
        if not isinstance(answer, dict):
            raise _NotServed(f"{method} {path} answered no JSON object")
        return answer
