"""The library's FAISS file (retrieval/library.py, retrieval/index_file.py): a damaged, foreign or unsavable
file never breaks a search, `facts` never calls a bad file current, and an index run leaves a file the
first search uses as is."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.pipeline import index_folders
from retrieval.errors import IndexFileWarning
from retrieval.index_file import MAGIC
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.search import Searcher
from retrieval.storage.records import FileMetadata
from tests import imagefactory as factory
from tests.libcheck import assert_same_vectors, store_vectors, unit_vectors

COUNT = 50


def _fill(library: Library, encoder: Encoder, seed: int) -> None:
    library.bind_model(encoder)
    vectors = unit_vectors(COUNT, seed, encoder.dim)
    with library.store.writer() as writer:
        for n in range(COUNT):
            writer.upsert_image(FileMetadata(f"/fake/{n}.jpg", n, n, f"h{n}"), vectors[n], "tiny")


@pytest.fixture
def filled(tmp_path: Path, tiny_encoder: Encoder, library_url: str | None) -> Iterator[Library]:
    """A library of COUNT hand-made vectors whose FAISS file of the current generation is saved; its store
    on SQLite, then on PostgreSQL."""
    with Library(tmp_path / "library", create=True, database_url=library_url) as library:
        _fill(library, tiny_encoder, seed=1)
        library.load_index(gpu="never")
        yield library


def _current(library: Library) -> Path:
    return library.index_path(library.store.generation())


def _assert_correct(library: Library, encoder: Encoder) -> None:
    """The loaded index holds the store's vectors, and a search through it returns k rows."""
    _, ids, vectors = store_vectors(library.store, encoder.dim)
    assert_same_vectors(library.load_index(gpu="never"), ids, vectors)
    results = Searcher(library, encoder, gpu="never").search_vector(vectors[3], k=5)
    assert len(results) == 5 and results[0].id == ids[3]


def _no_warnings(action: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return action()


def test_a_saved_file_is_current_and_used_as_is(filled: Library, tiny_encoder: Encoder) -> None:
    """`facts` calls the saved file current; loading it (and searching) neither warns nor rewrites it."""
    path = _current(filled)
    assert filled.facts().index_file == path
    inode = path.stat().st_ino
    _no_warnings(lambda: _assert_correct(filled, tiny_encoder))
    assert path.stat().st_ino == inode


def _empty(data: bytes) -> bytes:
    return b""


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _header_garbled(data: bytes) -> bytes:
    return b"XXXX" + data[4:]


def _body_garbled(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


def _fingerprint_garbled(data: bytes) -> bytes:
    end = len(data) - len(MAGIC) - 8 - 5
    return data[:end] + b"#####" + data[end + 5 :]


def test_the_file_this_library_wrote_loads_without_reading_every_id(
    filled: Library, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold search loads the FAISS file the library itself wrote (its recorded stamp unchanged) on the strength
    of its fingerprint, without gathering and hashing every id or counting the store (0.25 s at 1M); a file
    whose stamp changed (touched, copied in) gets every check again."""
    import retrieval.library as library_module

    digests: list[int] = []
    real = library_module.ids_digest
    monkeypatch.setattr(library_module, "ids_digest", lambda ids: digests.append(len(ids)) or real(ids))
    counts: list[int] = []
    real_count = filled.store.count_vectors
    monkeypatch.setattr(filled.store, "count_vectors", lambda: counts.append(1) or real_count())
    _no_warnings(lambda: filled.load_index(gpu="never", mmap=True))
    assert (digests, counts) == ([], [])
    path = _current(filled)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    _no_warnings(lambda: filled.load_index(gpu="never", mmap=True))
    assert (digests, counts) == ([COUNT], [1])
    _no_warnings(lambda: _assert_correct(filled, tiny_encoder))


@pytest.mark.parametrize(
    "damage", [_empty, _truncated, _header_garbled, _body_garbled, _fingerprint_garbled], ids=lambda f: f.__name__
)
def test_a_damaged_file_is_not_current_and_is_rebuilt_with_a_warning(
    damage: Callable[[bytes], bytes], filled: Library, tiny_encoder: Encoder
) -> None:
    """Empty, truncated, garbled (header, vectors, fingerprint): `facts` says stale, and the next load warns
    once with IndexFileWarning, rebuilds the file from the store, and searches correctly."""
    path = _current(filled)
    path.write_bytes(damage(path.read_bytes()))
    assert filled.facts().index_file is None
    with pytest.warns(IndexFileWarning) as caught:
        searcher = Searcher(filled, tiny_encoder, gpu="never")
    assert len(caught) == 1 and str(path) in str(caught[0].message) and "\n" not in str(caught[0].message)
    assert len(searcher.search_vector(unit_vectors(1, 1, tiny_encoder.dim)[0], k=5)) == 5
    assert filled.facts().index_file == path
    _no_warnings(lambda: _assert_correct(filled, tiny_encoder))


def test_another_librarys_file_of_the_same_count_is_not_used(
    filled: Library, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """A FAISS file copied from another library with the same generation and count (other vectors) is
    recognised as foreign: not current, rebuilt with a warning, and results come from this library."""
    with Library(tmp_path / "other", create=True) as other:
        _fill(other, tiny_encoder, seed=2)
        other.load_index(gpu="never")
        assert other.store.generation() == filled.store.generation()
        shutil.copyfile(_current(other), _current(filled))
    assert filled.facts().index_file is None
    with pytest.warns(IndexFileWarning, match="another library"):
        filled.load_index(gpu="never")
    _no_warnings(lambda: _assert_correct(filled, tiny_encoder))


_UNDER_A_FILE_SIZE_LIMIT = """
import json, sys, warnings
import numpy as np
from retrieval.errors import IndexSaveError
from retrieval.library import Library
outcome = {}
with Library(sys.argv[1], database_url=sys.argv[2] or None) as library, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    index = library.load_index(gpu="never", mmap=True)  # what a search does first
    query = np.ones((1, index.dim), dtype=np.float32)
    outcome["results"] = int((index.search(query, 5)[1] >= 0).sum())
    outcome["warnings"] = [(w.category.__name__, str(w.message)) for w in caught]
    try:
        library.save_index(library.load_index(gpu="never"), library.store.generation())
    except IndexSaveError as exc:
        outcome["error"] = str(exc)
print(json.dumps(outcome))
"""


def _limit_file_size() -> None:
    """In the child: files may grow to 4 KB (the FAISS file needs more), and SIGXFSZ is ignored, so a
    longer write fails with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.slow
def test_a_full_disk_searches_from_memory_and_an_index_save_raises(
    filled: Library, tiny_encoder: Encoder, library_url: str | None
) -> None:
    """With the FAISS file missing and no room to write a new one (EFBIG, for real, through a file size
    limit in a child process), the search path rebuilds the index in memory and answers with one
    IndexSaveWarning; saving (what an index run does) raises IndexSaveError with a sentence; no partial
    file is left and the store is intact."""
    _current(filled).unlink()
    child = subprocess.run(
        [sys.executable, "-c", _UNDER_A_FILE_SIZE_LIMIT, str(filled.directory), library_url or ""],
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["results"] == 5
    assert [category for category, _ in outcome["warnings"]] == ["IndexSaveWarning"]
    assert "File too large" in outcome["warnings"][0][1] and "\n" not in outcome["warnings"][0][1]
    assert "File too large" in outcome["error"] and "store is intact" in outcome["error"]
    assert sorted(p.name for p in filled.directory.iterdir() if "faiss" in p.name) == []
    assert filled.store.count_vectors() == COUNT
    _assert_correct(filled, tiny_encoder)  # and the next search, with room again, rebuilds and saves
    assert filled.facts().index_file == _current(filled)


def test_first_search_after_index_runs_uses_the_saved_file(
    tmp_path: Path, tiny_encoder: Encoder, library_url: str | None
) -> None:
    """After an index run (a first one, then one with only a move and a deletion), the file saved for the
    store's generation is current, and the first search memory-maps it read-only without rebuilding it."""
    root = factory.photo_folder(tmp_path / "photos")
    with Library(tmp_path / "library", create=True, database_url=library_url) as library:
        for change in (None, "move and delete"):
            if change:
                (root / "img00.png").rename(root / "moved.png")
                (root / "img01.png").unlink()
            report = index_folders(library, tiny_encoder, [str(root)], workers=1)
            assert (report.moved, report.removed) == ((1, 1) if change else (0, 0))
            path = _current(library)
            assert library.facts().index_file == path
            inode = path.stat().st_ino
            searcher = _no_warnings(lambda: Searcher(library, tiny_encoder, gpu="never"))
            assert searcher.index.read_only
            assert path.stat().st_ino == inode
            assert sorted(p.name for p in library.directory.glob("index-*.faiss")) == [path.name]
            _assert_correct(library, tiny_encoder)


def test_an_index_run_loads_a_writable_index(filled: Library) -> None:
    """`load_index` reads the file whole by default (an index run changes it); `mmap` is read-only."""
    assert not filled.load_index(gpu="never").read_only
    mapped = filled.load_index(gpu="never", mmap=True)
    assert mapped.read_only
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.remove([1])
    with pytest.raises(RuntimeError, match="memory-mapped"):
        filled.save_index(mapped, filled.store.generation())
    assert os.path.exists(_current(filled))
    np.testing.assert_array_equal(np.sort(mapped.ids()), np.sort(filled.load_index(gpu="never").ids()))
