"""A library shared by several machines through one PostgreSQL store (retrieval/library.py's writer lock,
retrieval/storage/postgres.py): each machine has its own library folder, with its own FAISS file, and indexes
its own folders into the shared store at the same time as the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.search import Searcher
from retrieval.storage.records import FileMetadata
from tests import imagefactory as factory
from tests.fresh import ROOT
from tests.libcheck import assert_same_vectors, store_vectors, unit_vectors

PER_MACHINE = 8
_CLI = """
import sys
import warnings
from tests import netguard
netguard.install()
from indexer.cli import main
sys.argv = ["clipsearch", *sys.argv[1:]]
main()
"""


def _index(folder: Path, library: Path, url: str, config: Path) -> subprocess.Popen[str]:
    """`clipsearch index FOLDER` in a process of its own: one machine's run."""
    args = ["index", str(folder), "--library", str(library), "--database-url", url, "--json"]
    args += ["--model", str(config), "--pretrained", "none", "--device", "cpu", "--backend", "torch"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CLI, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_two_machines_index_into_one_store_at_once(tmp_path: Path, postgres_url: str, tiny_config: Path) -> None:
    """Two processes, each with its own library folder, index different folders into one PostgreSQL store at the
    same time. Both succeed (their runs take turns on the store's run lock); every image is there once with a
    vector; and each machine's FAISS file, whatever generation it was saved at, is rebuilt to the store's
    generation and holds exactly the store's vectors, so each machine finds the other's images."""
    folders = {name: tmp_path / f"photos-{name}" for name in ("a", "b")}
    for offset, folder in enumerate(folders.values()):
        for n in range(PER_MACHINE):
            factory.pattern_png(folder / f"{n}.png", seed=100 * offset + n)
    libraries = {name: tmp_path / f"machine-{name}" for name in folders}
    runs = {name: _index(folders[name], libraries[name], postgres_url, tiny_config) for name in folders}
    for name, run in runs.items():
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, f"machine {name}: {err}"
        assert json.loads(out)["embedded"] == PER_MACHINE
    every = {str(folder / f"{n}.png") for folder in folders.values() for n in range(PER_MACHINE)}
    for name, folder in libraries.items():
        with Library(folder, database_url=postgres_url) as library:
            states = library.store.file_states_under(str(tmp_path))
            assert set(states) == every and all(state.has_vector for state in states.values())
            generation, ids, vectors = store_vectors(library.store, 32)
            assert len(ids) == len(every) == len(set(ids.tolist()))
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a file behind the store is rebuilt silently, a wrong one warns
                index = library.load_index(gpu="never")
            assert_same_vectors(index, ids, vectors)
            assert library.facts().index_file == library.index_path(generation)
            other = folders["b" if name == "a" else "a"] / "3.png"
            searcher = Searcher(library, library.encoder(device="cpu", backend="torch"), gpu="never")
            (hit,) = searcher.search_image(other, k=1, include_self=True)
            assert hit.path == str(other)


def test_each_machines_file_keeps_its_own_stamp(tmp_path: Path, postgres_url: str, tiny_encoder: Encoder) -> None:
    """Two library folders on one shared store, each with its FAISS file of the same generation: each loads its
    own file on the strength of its own recorded stamp, without reading every id, however often the other one
    saved since (one stamp for the whole store sent the other machine to the full checks every time)."""
    import retrieval.library as library_module

    first = Library(tmp_path / "machine-a", create=True, database_url=postgres_url)
    second = Library(tmp_path / "machine-b", database_url=postgres_url)
    try:
        first.bind_model(tiny_encoder)
        with first.store.writer() as writer:
            writer.add_images([FileMetadata(f"/x/{n}.jpg", n, n, f"h{n}") for n in range(5)],
                              unit_vectors(5, 1, tiny_encoder.dim), "tiny")  # fmt: skip
        first.load_index(gpu="never")
        second.load_index(gpu="never")  # rebuilt and saved by the other machine after the first one's save
        digests: list[int] = []
        real = library_module.ids_digest
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(library_module, "ids_digest", lambda ids: digests.append(len(ids)) or real(ids))
            for library in (first, second, first):
                assert len(library.load_index(gpu="never", mmap=True)) == 5
        assert digests == []
    finally:
        first.close()
        second.close()
