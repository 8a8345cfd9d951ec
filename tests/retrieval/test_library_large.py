"""The large index inside a library: past its threshold (forced low here) the library builds the large kind from
the store, saves it as its one FAISS file, maps it for searches, and re-ranks and reconstructs from the store's
vectors, so results match exact search over the store; shrinking back gives the SQfp16 IVF again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import retrieval.index_policy as policy
from retrieval.filters import IdFilter
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.records import FileMetadata
from retrieval.storage.vectors import as_stored
from tests.libcheck import store_vectors, unit_vectors

COUNT, K = 1_500, 10


@pytest.fixture
def large_library(tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> Iterator[Library]:
    """A library of COUNT random vectors whose thresholds make it large (PQ codes of 4 components each, built
    in this process)."""
    monkeypatch.setattr(policy, "ANN_MIN_VECTORS", 100)
    monkeypatch.setattr(policy, "LARGE_MIN_VECTORS", 1_000)
    monkeypatch.setattr(policy, "LARGE_AGAIN_BELOW", 500)
    monkeypatch.setattr(policy, "LARGE_CODES", f"PQ{tiny_encoder.dim // 4}")
    monkeypatch.setattr(policy, "LARGE_BUILD_WORKERS", 0)
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(tiny_encoder)
        vectors = as_stored(unit_vectors(COUNT, 3, tiny_encoder.dim))
        metas = [FileMetadata(f"/fake/{n}.jpg", n, n, f"h{n}") for n in range(COUNT)]
        with library.store.writer() as writer:
            writer.add_images(metas, vectors, "tiny")
        yield library


@pytest.mark.slow
def test_a_large_library_searches_its_mapped_file_with_reranking(large_library: Library) -> None:
    built = large_library.load_index(gpu="never")  # no file yet: built from the store, saved
    assert built.kind == "large" and built.vector_source is not None
    mapped = large_library.load_index(gpu="never", mmap=True)  # the saved file, as a search opens it
    assert (mapped.kind, mapped.read_only, len(mapped)) == ("large", True, COUNT)
    _, ids, vectors = store_vectors(large_library.store, mapped.dim)
    queries = unit_vectors(20, 9, mapped.dim)
    mapped.nprobe = 1 << 20  # every list: what remains is the codes' error, which re-ranking removes
    scores, found = mapped.search(queries, K)
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :K]]
    hits = np.mean([len(set(f) & set(e)) / K for f, e in zip(found.tolist(), exact.tolist(), strict=True)])
    assert hits >= 0.98
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(mapped.reconstruct(ids[:3]), vectors[:3])
    assert mapped.contains(int(ids[0])) and not mapped.contains(int(ids.max()) + 1)
    kept = ids[::100]
    _, inside = mapped.search(queries, K, IdFilter(kept))
    assert np.isin(inside, kept).all()


@pytest.mark.slow
def test_a_large_library_that_shrinks_gets_the_ivf_again(large_library: Library) -> None:
    index = large_library.load_index(gpu="never")
    _, ids, _ = store_vectors(large_library.store, index.dim)
    with large_library.store.writer() as writer:
        writer.delete_images(ids[:1_100].tolist())
    index.remove(ids[:1_100])
    assert "LARGE_AGAIN_BELOW" in (policy.rebuild_reason(index) or "")
    large_library.save_index(index, large_library.store.generation())
    assert large_library.load_index(gpu="never").kind == "ivf"
