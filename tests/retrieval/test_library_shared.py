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
from retrieval.search import Searcher
from tests import imagefactory as factory
from tests.fresh import ROOT
from tests.libcheck import assert_same_vectors, store_vectors

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
