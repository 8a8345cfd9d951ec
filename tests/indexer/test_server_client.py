"""`search_via_server` against a real app (`indexer.web.app.create_app`) served by uvicorn on a loopback port in
this process: the same results as a local search, and None (search locally) whenever the server cannot stand
in for one: no discovery file, a dead or garbled one, another library, a server behind the store, a query it
cannot take."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from indexer.cli.serve import listen
from indexer.pipeline import index_folders
from indexer.server_client import search_via_server, server_for
from retrieval.filters import SearchFilter
from retrieval.library import Library
from retrieval.model.specs import ModelSpec
from retrieval.query import Part, Query
from retrieval.search import Searcher
from retrieval.server_file import ServerInfo, read_server_file, server_file_path, write_server_file
from tests import imagefactory

pytest.importorskip("fastapi", reason="the `serve` extra (FastAPI, uvicorn) is not installed")


class ServedLibrary:
    """A library indexed with the tiny model, served by a uvicorn thread on a free loopback port."""

    def __init__(self, directory: Path, spec: ModelSpec, photos: Path, *, reload_interval: float = 0.0) -> None:
        import uvicorn

        from indexer.web.app import create_app

        self.directory = directory
        with Library(directory, create=True) as library:
            self.encoder = library.encoder(spec, device="cpu")
            index_folders(library, self.encoder, [str(photos)], workers=1)
        app = create_app(directory, reload_interval=reload_interval, warm=False)
        app.state.service.warm()
        self.sock = listen("127.0.0.1", 0)  # as `clipsearch serve` listens
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.library_id = app.state.service.status()["library_id"]
        self.announce()

    def announce(self, **changes: Any) -> ServerInfo:
        """Write the discovery file as `clipsearch serve` does (with `changes` to its fields)."""
        info = replace(
            ServerInfo.now(host="127.0.0.1", port=self.port, library_id=self.library_id, version="t"), **changes
        )
        write_server_file(self.directory, info)
        return info

    def local(self, query: Query) -> list[Any]:
        with Library(self.directory, reading=True) as library:
            return Searcher(library, self.encoder).search(query)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_spec: ModelSpec) -> Iterator[ServedLibrary]:
    root = tmp_path_factory.mktemp("served")
    serving = ServedLibrary(root / "library", tiny_spec, imagefactory.photo_folder(root / "photos"))
    yield serving
    serving.stop()


@pytest.fixture(autouse=True)
def _announced(request: pytest.FixtureRequest) -> None:
    """Each test starts with the module's server announced as it would be (tests change the file)."""
    if "served" in request.fixturenames:
        request.getfixturevalue("served").announce()


QUERIES = {
    "text": Query.of_text("a red square", k=5, min_relevance=0),
    "default cutoff": Query.of_text("a red square", k=5),
    "fused": Query(
        (Part(text="red"), Part(text="blue", weight=-1), Part(text="circle", weight=2)), k=4, min_relevance=0
    ),
    "sorted by date": Query.of_text("stripes", k=6, sort="-date", min_relevance=0, min_score=-1),
    "template": Query.of_text("dog", k=3, template="a photo of {}", min_relevance=0),
}


@pytest.mark.parametrize("name", QUERIES)
def test_the_server_answers_as_a_local_search(served: ServedLibrary, name: str) -> None:
    query = QUERIES[name]
    answered = search_via_server(served.directory, query)
    assert answered is not None
    assert answered == served.local(query)


def test_filters_and_an_image_id_go_through(served: ServedLibrary) -> None:
    inside = str(served.directory.parent / "photos" / "trip")
    with Library(served.directory, reading=True) as library:
        some_id = int(library.reads.ids_under(inside)[0])
    query = Query(
        (Part(image_id=some_id), Part(text="green", weight=0.5)),
        k=2,
        filter=SearchFilter.of(within=[inside]),
        min_relevance=None,
    )
    answered = search_via_server(served.directory, query)
    assert answered is not None and len(answered) == 2
    assert answered == served.local(query)
    assert some_id not in {result.id for result in answered}  # its own image left out, as locally


def test_no_file_a_dead_process_or_garbage_is_no_server(served: ServedLibrary) -> None:
    query = QUERIES["text"]
    server_file_path(served.directory).unlink()
    assert search_via_server(served.directory, query) is None
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    served.announce(pid=finished.pid)
    assert search_via_server(served.directory, query) is None
    assert server_for(served.directory) is None
    server_file_path(served.directory).write_text("{not json")
    assert search_via_server(served.directory, query) is None


def test_nothing_listening_is_no_server(served: ServedLibrary) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    served.announce(port=port)  # our own (live) pid, but nobody on that port
    started = time.perf_counter()
    assert search_via_server(served.directory, QUERIES["text"]) is None
    assert time.perf_counter() - started < 2


def test_another_library_at_the_recorded_url_is_no_server(
    served: ServedLibrary, tmp_path: Path, tiny_spec: ModelSpec, photos: Path
) -> None:
    """A discovery file in library B naming the server of library A (say A's server took over a port B's
    server had): B's search must not get A's results."""
    other = tmp_path / "other"
    with Library(other, create=True) as library:
        index_folders(library, library.encoder(tiny_spec, device="cpu"), [str(photos)], workers=1)
    recorded = json.loads(server_file_path(served.directory).read_text())
    write_server_file(other, ServerInfo(**recorded))  # A's id too: the folder tells them apart
    assert search_via_server(other, QUERIES["text"]) is None
    write_server_file(other, ServerInfo(**recorded | {"library_id": "not-a's"}))
    assert search_via_server(other, QUERIES["text"]) is None
    assert server_for(other) is None
    assert server_for(served.directory) == read_server_file(served.directory)


def test_queries_the_server_cannot_take_are_not_sent(served: ServedLibrary, photos: Path) -> None:
    image = next(photos.glob("*.png"))
    assert search_via_server(served.directory, Query.of_image(image, k=3)) is None  # a file: local
    assert search_via_server(served.directory, Query.of_text("red", k=5000, min_relevance=0)) is None  # a 400
    assert search_via_server(served.directory, QUERIES["text"], model="another model") is None


@pytest.mark.slow
def test_a_server_behind_the_store_is_not_asked(tmp_path: Path, tiny_spec: ModelSpec, photos: Path) -> None:
    """An index run commits; a server that has not reloaded yet (a long reload interval) would answer from the
    older generation, which a local search would not: the search goes local."""
    serving = ServedLibrary(tmp_path / "library", tiny_spec, photos, reload_interval=3600)
    try:
        query = QUERIES["text"]
        assert search_via_server(serving.directory, query) is not None
        shutil.copy(next(photos.glob("*.png")), photos / "copy.png")
        os.utime(photos / "copy.png", ns=(1, 1))
        with Library(serving.directory) as library:
            index_folders(library, serving.encoder, [str(photos)], workers=1)
        assert search_via_server(serving.directory, query) is None
    finally:
        serving.stop()


@pytest.mark.slow
def test_a_server_whose_view_of_the_store_lags_is_not_trusted(
    tmp_path: Path, tiny_spec: ModelSpec, photos: Path
) -> None:
    """A server whose store connection is held on an old snapshot reports that generation as the store's (seen
    from `clipsearch serve` under index runs: its status said 86 while the store was at 89). Its answer is
    checked against the store's generation read here, so the search goes local."""
    serving = ServedLibrary(tmp_path / "library", tiny_spec, photos)
    try:
        query = QUERIES["text"]
        assert search_via_server(serving.directory, query) is not None
        reads = serving.server.config.app.state.service.library().reads
        held = reads._inner._connection.execute("SELECT id FROM images")  # a statement left open holds a snapshot
        held.fetchone()
        served = reads.generation()
        shutil.copy(next(photos.glob("*.png")), photos / "copy.png")
        with Library(serving.directory) as library:
            index_folders(library, serving.encoder, [str(photos)], workers=1)
            assert library.reads.generation() > served
        status = serving.server.config.app.state.service.status()
        assert (status["generation"], status["store_generation"]) == (served, served)  # it believes it is current
        assert search_via_server(serving.directory, query) is None
        held.close()
    finally:
        serving.stop()
