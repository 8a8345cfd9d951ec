"""Tests of retrieval.large_index and the `large` kind of VectorIndex: built in shards == built at once, merged on
disk, one faiss file mapped read-only, re-ranking against the stored vectors restores recall, filters work.
Real faiss on small realistic synthetic vectors, compared with an exact reference."""

from __future__ import annotations

import io
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.filters import IdFilter
from retrieval.index import LARGE, VectorIndex
from retrieval.index_policy import build_index, kind_for, rebuild_reason
from retrieval.large_index import (
    Spool,
    add_in_shards,
    is_on_disk,
    memmap_source,
    merge_shards,
    pq_subquantizers,
    sample,
    train_large,
    write_streamed,
)
from retrieval.quality.synthetic_vectors import ClipLikeSpace
from retrieval.storage.vectors import STORED_DTYPE

DIM, COUNT, NLIST, CODES, K = 32, 4_000, 16, "PQ8", 10


@pytest.fixture(scope="module")
def space() -> ClipLikeSpace:
    return ClipLikeSpace(dim=DIM, clusters=64, chunk=1024)


@pytest.fixture(scope="module")
def spooled(space: ClipLikeSpace, tmp_path_factory: pytest.TempPathFactory) -> Spool:
    """COUNT CLIP-like vectors as the store keeps them (float16), ids 1000 + 3 * position (sorted, sparse)."""
    folder = tmp_path_factory.mktemp("spool")
    np.save(folder / "vectors.npy", space.image_vectors(COUNT).astype(STORED_DTYPE))
    np.save(folder / "ids.npy", 1000 + 3 * np.arange(COUNT, dtype=np.int64))
    return Spool(folder / "vectors.npy", folder / "ids.npy", COUNT)


def _stored(source: Spool) -> tuple[np.ndarray, np.ndarray]:
    return np.load(source.ids), np.load(source.vectors).astype(np.float32)


def _exact(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int = K) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]]


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found.tolist(), exact.tolist(), strict=True)]))


@pytest.fixture(scope="module")
def trained(spooled: Spool) -> object:
    return train_large(DIM, NLIST, sample(spooled, COUNT), CODES)


@pytest.fixture(scope="module")
def large(spooled: Spool, tmp_path_factory: pytest.TempPathFactory) -> VectorIndex:
    """The large kind as the policy builds it, from (ids, vectors) batches, forced by `kind`."""
    ids, vectors = _stored(spooled)
    batches = [(ids[start : start + 1500], vectors[start : start + 1500]) for start in range(0, COUNT, 1500)]
    folder = tmp_path_factory.mktemp("large")
    return build_index(DIM, COUNT, batches, kind=LARGE, nlist=NLIST, codes=CODES, gpu="never", workers=0,
                       workdir=folder)  # fmt: skip


def _built_in_shards(trained: object, source: Spool, folder: Path, workers: int) -> tuple[object, object]:
    """(the index built in 5 shards and merged on disk, the same trained index with everything added at once)."""
    trained = faiss.clone_index(trained)
    at_once = faiss.clone_index(trained)
    ids, vectors = _stored(source)
    at_once.add_with_ids(vectors, ids)
    shards = add_in_shards(trained, source, folder, workers=workers, shard=COUNT // 5 + 1)
    assert len(shards) == 5
    return merge_shards(trained, shards, folder / "merged.ivfdata"), at_once


def test_shards_merged_on_disk_equal_one_add(
    trained: object, spooled: Spool, space: ClipLikeSpace, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Adding is per vector and merging concatenates lists in shard order, so the merged on-disk index holds
    exactly what one add of everything holds: the same search results, and the one file written from its
    on-disk lists has faiss's own bytes for the in-memory index."""
    merged, at_once = _built_in_shards(trained, spooled, tmp_path, workers=0)
    assert is_on_disk(merged) and not is_on_disk(at_once)
    printed = capfd.readouterr()
    assert "resizing" not in printed.out and "resizing" in printed.err  # faiss's printf kept off stdout
    queries, _ = space.text_queries(20)
    merged.nprobe = at_once.nprobe = 8
    for got, want in zip(merged.search(queries, K), at_once.search(queries, K), strict=True):
        np.testing.assert_array_equal(got, want)
    streamed = io.BytesIO()
    write_streamed(merged, streamed.write)
    assert streamed.getvalue() == bytes(faiss.serialize_index(at_once))


@pytest.mark.slow
def test_worker_processes_build_the_same_shards(trained: object, spooled: Spool, tmp_path: Path) -> None:
    """Two spawned worker processes (one faiss thread each) write the same shards as one process does."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    here, _ = _built_in_shards(trained, spooled, tmp_path / "one", workers=0)
    there, _ = _built_in_shards(trained, spooled, tmp_path / "two", workers=2)
    one, two = io.BytesIO(), io.BytesIO()
    write_streamed(here, one.write)
    write_streamed(there, two.write)
    assert one.getvalue() == two.getvalue()


def test_the_large_kind_saves_one_file_that_maps_read_only(
    spooled: Spool, space: ClipLikeSpace, tmp_path: Path
) -> None:
    """build_index(kind='large') spools, trains, shards and merges on disk; `save` writes one fingerprinted file;
    `load(mmap=True)` maps it read-only and answers the same as the built index; the scratch folder goes
    with the built index."""
    ids, vectors = _stored(spooled)
    batches = [(ids[start : start + 1500], vectors[start : start + 1500]) for start in range(0, COUNT, 1500)]
    built = build_index(DIM, COUNT, batches, kind=LARGE, nlist=8, codes="PQ4", workers=0, workdir=tmp_path)
    assert (built.kind, len(built), built.trained_on) == (LARGE, COUNT, COUNT)
    assert next(p.name for p in tmp_path.iterdir()).startswith("clipsearch-large-")
    built.save(tmp_path / "index.faiss")
    mapped = VectorIndex.load(tmp_path / "index.faiss", gpu="never", mmap=True)
    assert (mapped.kind, mapped.read_only, len(mapped)) == (LARGE, True, COUNT)
    np.testing.assert_array_equal(np.sort(mapped.ids()), ids)
    queries, _ = space.text_queries(20)
    for got, want in zip(mapped.search(queries, K), built.search(queries, K), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(RuntimeError, match="read-only"):
        mapped.add([1], queries[:1])
    del built
    assert not any(p.name.startswith("clipsearch-large-") for p in tmp_path.iterdir())


def test_reranking_against_stored_vectors_improves_recall(
    large: VectorIndex, spooled: Spool, space: ClipLikeSpace
) -> None:
    """PQ scores alone lose neighbours; re-scoring rerank_factor x k candidates exactly against the float16
    vectors brings recall@10 near what the probed lists allow, with exact scores."""
    index = large
    ids, vectors = _stored(spooled)
    queries, _ = space.text_queries(100)
    exact = _exact(queries, ids, vectors)
    index.nprobe, index.vector_source = NLIST, None  # every list: what is left is the codes' error alone
    pq_only = _recall(index.search(queries, K)[1], exact)
    index.vector_source = memmap_source(spooled.vectors, spooled.ids)
    scores, found = index.search(queries, K)
    reranked = _recall(found, exact)
    assert pq_only < 0.8 and reranked >= 0.97 and reranked > pq_only + 0.2, (pq_only, reranked)
    position = {int(i): row for row, i in enumerate(ids)}
    np.testing.assert_allclose(scores[0], vectors[[position[int(i)] for i in found[0]]] @ queries[0], rtol=1e-5)
    np.testing.assert_array_equal(index.reconstruct(found[0][:3]), vectors[[position[int(i)] for i in found[0][:3]]])
    assert index.contains(int(ids[5])) and not index.contains(1001)


def test_a_filter_acts_inside_the_large_search(large: VectorIndex, spooled: Spool, space: ClipLikeSpace) -> None:
    """An IdFilter keeps the search to its ids (every list visited when it keeps few), re-ranked exactly."""
    index = large
    index.vector_source = memmap_source(spooled.vectors, spooled.ids)
    ids, vectors = _stored(spooled)
    kept = ids[::50]
    queries, _ = space.text_queries(30)
    _, found = index.search(queries, K, IdFilter(kept))
    assert np.isin(found, kept).all()
    inside = np.isin(ids, kept)
    assert _recall(found, _exact(queries, ids[inside], vectors[inside])) >= 0.99
    _, few = index.search(queries[:1], K, IdFilter(kept[:3]))
    assert sorted(few[0][few[0] >= 0].tolist()) == sorted(kept[:3].tolist())


def test_policy_and_codes(tmp_path: Path) -> None:
    """The large kind from its threshold on (forced low by a parameter); PQ codes only, dim a multiple of m."""
    assert kind_for(10_000_000) == LARGE
    assert kind_for(99, min_vectors=10, large_min_vectors=100) == "ivf"
    assert kind_for(100, min_vectors=10, large_min_vectors=100) == LARGE
    assert pq_subquantizers("PQ64") == 64
    for bad in ("SQ8", "PQ", "PQx", "PQ0"):
        with pytest.raises(ValueError, match="`codes`"):
            pq_subquantizers(bad)
    with pytest.raises(ValueError, match="multiple"):
        train_large(DIM, 4, np.zeros((200, DIM), dtype=np.float32), "PQ7")
    assert rebuild_reason(VectorIndex(DIM, gpu="never")) is None


def test_range_search_keeps_exact_scores_above_the_radius(large: VectorIndex, spooled: Spool) -> None:
    """Near-duplicates on a large index: candidates gathered LARGE_RANGE_MARGIN below the radius by PQ score,
    kept by their exact score: every pair returned is right, with its exact score, and nearly none is missed
    (these 8-code vectors err more than the library's PQ128 on 512-d ones)."""
    ids, vectors = _stored(spooled)
    index = large
    index.vector_source = memmap_source(spooled.vectors, spooled.ids)
    queries = vectors[:40] + np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32) * 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    radius = 0.9
    lims, scores, found = index.range_search(queries, radius, nprobe=NLIST)
    exact = queries @ vectors.T
    position = {int(i): row for row, i in enumerate(ids)}
    query_of = np.repeat(np.arange(len(queries)), np.diff(lims))
    np.testing.assert_allclose(scores, exact[query_of, [position[int(i)] for i in found]], rtol=1e-5)
    assert (scores >= radius).all()
    assert lims[-1] >= 0.97 * (exact >= radius).sum()
    assert lims[-1] > len(queries)  # more than the source vectors themselves
    index.vector_source = None
    _, pq_scores, _ = index.range_search(queries, radius, nprobe=NLIST)  # PQ scores alone: not exact
    assert not np.allclose(np.sort(pq_scores)[-10:], np.sort(scores)[-10:], rtol=1e-5)
