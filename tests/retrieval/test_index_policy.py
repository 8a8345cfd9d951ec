"""Tests of retrieval.index_policy: the index kind follows the library's size, and a library that crosses
the threshold, grows past the retraining point or shrinks gets the right index, always equal to the store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import retrieval.index_policy as policy
from indexer.pipeline import index_folders
from retrieval.index import VectorIndex, filtered_nprobe, nprobe_for
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.records import FileMetadata
from retrieval.storage.vectors import as_stored
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, unit_vectors

THRESHOLD = 400


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuning constants scaled down so that a few hundred vectors cross them."""
    monkeypatch.setattr(policy, "ANN_MIN_VECTORS", THRESHOLD)
    monkeypatch.setattr(policy, "ANN_FLAT_AGAIN_BELOW", THRESHOLD // 2)


def test_kind_and_lists_follow_the_size() -> None:
    """Flat below ANN_MIN_VECTORS, IVF from it; nlist ~ 4 sqrt(n) as a power of two, with enough training
    points per list; nprobe 2 sqrt(nlist), more under a filter (nprobe / sqrt(share kept), at most nlist)."""
    assert policy.kind_for(policy.ANN_MIN_VECTORS - 1) == "flat"
    assert policy.kind_for(policy.ANN_MIN_VECTORS) == "ivf"
    assert policy.kind_for(50, min_vectors=40) == "ivf"
    assert [policy.nlist_for(n) for n in (20_000, 100_000, 1_000_000, 10_000_000)] == [512, 1024, 4096, 16384]
    assert policy.nlist_for(10_000) == 256  # 400 wanted, 10 000 / 39 = 256 allowed
    assert policy.nlist_for(5) == 1
    assert [nprobe_for(n) for n in (1, 2, 256, 512, 1024, 4096)] == [1, 2, 32, 64, 64, 128]
    assert filtered_nprobe(128, 4096, 1_000_000, 1_000_000) == 128
    assert filtered_nprobe(128, 4096, 10_000, 1_000_000) == 1280  # keeps 1%: 128 / 0.1
    assert filtered_nprobe(128, 4096, 1_000, 1_000_000) == 4048  # keeps 0.1%: nearly every list
    assert filtered_nprobe(128, 4096, 500, 1_000_000) == 4096  # keeps 0.05%: every list, exact


def _ivf_trained_at(count: int, trained_on: int) -> VectorIndex:
    vectors = unit_vectors(count, 1, 8)
    index = VectorIndex.ivf(8, 4, vectors, trained_on=trained_on, gpu="never")
    index.add(np.arange(count), vectors)
    return index


@pytest.mark.usefixtures("small_threshold")
def test_rebuild_reasons() -> None:
    """Crossing the threshold, shrinking below the flat-again mark, and 4x growth since training rebuild;
    ordinary adds and deletes in between do not."""
    flat = VectorIndex(8, gpu="never")
    flat.add(np.arange(THRESHOLD - 1), unit_vectors(THRESHOLD - 1, 1, 8))
    assert policy.rebuild_reason(flat) is None
    flat.add([THRESHOLD], unit_vectors(1, 2, 8))
    assert "ANN_MIN_VECTORS" in (policy.rebuild_reason(flat) or "")
    assert policy.rebuild_reason(_ivf_trained_at(THRESHOLD, THRESHOLD)) is None
    assert policy.rebuild_reason(_ivf_trained_at(THRESHOLD * 3, THRESHOLD)) is None
    assert "retraining" in (policy.rebuild_reason(_ivf_trained_at(THRESHOLD * 4, THRESHOLD)) or "")
    assert "exact again" in (policy.rebuild_reason(_ivf_trained_at(THRESHOLD // 2 - 1, THRESHOLD)) or "")


@pytest.fixture
def growing(tmp_path: Path, tiny_encoder: Encoder, small_threshold: None) -> Iterator[tuple[Library, list[int]]]:
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        yield library, []


def _add(library: Library, ids: list[int], count: int, seed: int) -> None:
    """What an index run does: load the index, commit rows, mirror them in the index, save it."""
    index = library.load_index(gpu="never")
    vectors = as_stored(unit_vectors(count, seed, library.dim() or 1))  # float16-rounded, as the store keeps them
    with library.store.writer() as writer:
        new = [
            writer.upsert_image(FileMetadata(f"/fake/{seed}/{n}.jpg", n, n, f"h{seed}-{n}"), vectors[n], "tiny")
            for n in range(count)
        ]
    index.add(new, vectors)
    library.save_index(index, library.store.generation())
    ids += new


def _delete(library: Library, ids: list[int], count: int) -> None:
    index = library.load_index(gpu="never")
    gone, ids[:] = ids[:count], ids[count:]
    with library.store.writer() as writer:
        writer.delete_images(gone)
    index.remove(gone)
    library.save_index(index, library.store.generation())


@pytest.mark.slow
def test_index_runs_switch_kind_and_retrain_at_the_right_sizes(growing: tuple[Library, list[int]]) -> None:
    """Flat up to the threshold; the run that crosses it saves an IVF index trained at that size; adds
    keep it (no retraining) until 4x that size; deletes keep it until below half the threshold, then
    flat again. After every run the saved file equals the store."""
    library, ids = growing
    steps = [
        (lambda: _add(library, ids, THRESHOLD - 10, 1), "flat", 0),
        (lambda: _add(library, ids, 20, 2), "ivf", THRESHOLD + 10),
        (lambda: _add(library, ids, 2 * THRESHOLD, 3), "ivf", THRESHOLD + 10),
        (lambda: _add(library, ids, THRESHOLD + 30, 4), "ivf", 4 * THRESHOLD + 40),
        (lambda: _delete(library, ids, 3 * THRESHOLD + 190), "ivf", 4 * THRESHOLD + 40),
        (lambda: _delete(library, ids, 100), "flat", 0),
    ]
    for run, kind, trained_on in steps:
        run()
        index = library.load_index(gpu="never")
        assert (index.kind, index.trained_on, len(index)) == (kind, trained_on, len(ids))
        assert_index_matches_store(library)  # (its rebuild_index check saves a freshly trained file)
        library.save_index(index, library.store.generation())  # back to the file the runs made


def test_index_runs_keep_an_ivf_index_current_through_moves_copies_and_deletes(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the threshold below the folder's size, the indexer's library gets an IVF index, and runs that
    move, copy, add and delete files keep it equal to the store (no rebuild in between)."""
    monkeypatch.setattr(policy, "ANN_MIN_VECTORS", 5)
    monkeypatch.setattr(policy, "ANN_FLAT_AGAIN_BELOW", 2)
    root = factory.photo_folder(tmp_path / "photos")
    with Library(tmp_path / "library", create=True) as library:
        index_folders(library, tiny_encoder, [str(root)], workers=1)
        assert library.load_index(gpu="never").kind == "ivf"
        (root / "img00.png").rename(root / "moved.png")
        shutil.copy(root / "img02.png", root / "copy.png")
        (root / "img01.png").unlink()
        factory.pattern_png(root / "new.png", seed=40)
        report = index_folders(library, tiny_encoder, [str(root)], workers=1)
        assert (report.moved, report.copied, report.removed, report.embedded) == (1, 1, 1, 1)
        index = library.load_index(gpu="never", mmap=True)
        assert index.kind == "ivf" and index.read_only  # the run's own file, not a rebuild
        assert_index_matches_store(library)
