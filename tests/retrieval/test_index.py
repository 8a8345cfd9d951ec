"""Tests of retrieval.index.VectorIndex on real faiss, each checked against an exact numpy reference."""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.filters import IdFilter
from retrieval.index import VectorIndex, gpu_count
from retrieval.index_policy import nlist_for
from retrieval.storage.vectors import as_stored
from tests.fresh import run_python
from tests.libcheck import unit_vectors

DIM = 32
COUNT = 500
BASE_ID = 10**12  # far beyond int32, and the ids below are not contiguous
SCORE_TOL = 1e-5
FAISS_CPU_BUILD = not hasattr(faiss, "StandardGpuResources")


def _ids(rows: int) -> np.ndarray:
    return BASE_ID + 7 * np.arange(rows, dtype=np.int64) + 3


def _reference(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product in float64, padded like faiss (id -1, score -inf)."""
    distances = np.full((len(queries), k), -np.inf)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    if len(ids):
        scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
        take = min(k, len(ids))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
        distances[:, :take] = np.take_along_axis(scores, top, axis=1)
        found[:, :take] = ids[top]
    return distances, found


def _assert_same_neighbours(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Scores agree within SCORE_TOL; ids agree in order except where two reference scores tie."""
    (distances, ids), (want_distances, want_ids) = got, want
    assert distances.shape == want_distances.shape and ids.shape == want_ids.shape
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(np.isinf(distances), np.isinf(want_distances))
    finite = np.isfinite(want_distances)
    np.testing.assert_allclose(distances[finite], want_distances[finite], atol=SCORE_TOL)
    for row, column in zip(*np.nonzero(ids != want_ids), strict=True):
        row_scores = want_distances[row]
        tied = np.abs(row_scores - row_scores[column]) < SCORE_TOL
        assert tied.sum() > 1, f"query {row} rank {column}: id {ids[row, column]} != {want_ids[row, column]}"
        assert ids[row, column] in want_ids[row][tied]


@pytest.fixture
def vectors() -> np.ndarray:
    return unit_vectors(COUNT, 1, DIM)


@pytest.fixture
def index(vectors: np.ndarray) -> VectorIndex:
    built = VectorIndex(DIM, gpu="never")
    built.add(_ids(COUNT), vectors)
    return built


@pytest.fixture
def queries() -> np.ndarray:
    return unit_vectors(7, 2, DIM)


def test_search_equals_exact_reference(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray) -> None:
    """add + search returns the exact top-k by inner product, as the caller's int64 ids."""
    result = index.search(queries, 10)
    _assert_same_neighbours(result, _reference(queries, _ids(COUNT), vectors, 10))
    assert set(result[1].ravel()) <= set(_ids(COUNT).tolist())
    assert len(index) == COUNT
    np.testing.assert_array_equal(np.sort(index.ids()), _ids(COUNT))


def test_a_stored_vector_finds_itself_first(index: VectorIndex, vectors: np.ndarray) -> None:
    """Each stored unit vector is its own nearest neighbour, with score 1."""
    distances, ids = index.search(vectors[:20], 1)
    np.testing.assert_array_equal(ids[:, 0], _ids(COUNT)[:20])
    np.testing.assert_allclose(distances[:, 0], 1.0, atol=SCORE_TOL)


@pytest.mark.parametrize("stored", [0, 3])
def test_k_beyond_ntotal_is_clamped_to_what_can_match(stored: int, queries: np.ndarray) -> None:
    """k larger than the index gives one column per stored vector (none for an empty index), not k."""
    small = VectorIndex(DIM, gpu="never")
    small.add(_ids(stored), unit_vectors(stored, 3, DIM))
    distances, ids = small.search(queries, 5)
    assert ids.shape == distances.shape == (len(queries), stored)
    _assert_same_neighbours((distances, ids), _reference(queries, _ids(stored), unit_vectors(stored, 3, DIM), stored))


def test_a_huge_k_allocates_by_the_index_size(index: VectorIndex, queries: np.ndarray) -> None:
    """k = 10**9 on 500 vectors (unclamped: 12 GB of result arrays) stays within a few MB."""
    tracemalloc.start()
    try:
        _, ids = index.search(queries[:1], 10**9)
        filtered = index.search(queries[:1], 10**9, IdFilter.of(_ids(COUNT)[:5]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids.shape == (1, COUNT) and filtered[1].shape == (1, 5)
    assert peak < 8 << 20


def test_remove_counts_and_removed_ids_never_return(
    index: VectorIndex, vectors: np.ndarray, queries: np.ndarray
) -> None:
    """remove reports how many ids it dropped (absent ids count 0); search then matches the remaining set."""
    ids = _ids(COUNT)
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, [-5, BASE_ID - 1]])) == len(gone)
    assert index.remove(gone) == 0
    assert index.remove([]) == 0
    keep = np.ones(COUNT, dtype=bool)
    keep[::3] = False
    assert len(index) == keep.sum()
    all_queries = np.concatenate([queries, vectors[::3][:5]])  # the removed vectors themselves, too
    result = index.search(all_queries, 25)
    assert not np.isin(result[1], gone).any()
    _assert_same_neighbours(result, _reference(all_queries, ids[keep], vectors[keep], 25))


def test_readding_a_removed_id_works(index: VectorIndex) -> None:
    """An id removed and then added again is searchable with its new vector."""
    target = int(_ids(COUNT)[10])
    index.remove([target])
    fresh = unit_vectors(1, 9, DIM)
    index.add([target], fresh)
    distances, ids = index.search(fresh, 1)
    assert ids[0, 0] == target
    assert distances[0, 0] == pytest.approx(1.0, abs=SCORE_TOL)
    np.testing.assert_array_equal(index.reconstruct([target]), fresh)
    assert len(index) == COUNT


def test_reconstruct_returns_stored_vectors(index: VectorIndex, vectors: np.ndarray) -> None:
    """reconstruct gives back exactly the float32 vectors stored under those ids, in the order asked."""
    order = np.array([40, 3, 499, 0])
    np.testing.assert_array_equal(index.reconstruct(_ids(COUNT)[order]), vectors[order])
    assert index.reconstruct([]).shape == (0, DIM)


def test_filtered_search_equals_brute_force(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray) -> None:
    """A filtered search ranks only the allowed ids and equals the exact top-k over them."""
    chosen = np.random.default_rng(4).choice(COUNT, size=60, replace=False)
    result = index.search(queries, 10, IdFilter.of(_ids(COUNT)[chosen]))
    assert np.isin(result[1], _ids(COUNT)[chosen]).all()
    _assert_same_neighbours(result, _reference(queries, _ids(COUNT)[chosen], vectors[chosen], 10))


def test_filtered_search_with_exclusions(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Excluded ids never come back, with or without an allowed set, and the next best take their places."""
    excluded = _ids(COUNT)[::2]
    keep = np.ones(COUNT, dtype=bool)
    keep[::2] = False
    result = index.search(queries, 10, IdFilter.of(None, excluded))
    _assert_same_neighbours(result, _reference(queries, _ids(COUNT)[keep], vectors[keep], 10))
    both = index.search(queries, 10, IdFilter.of(_ids(COUNT)[:40], excluded))
    _assert_same_neighbours(both, _reference(queries, _ids(COUNT)[:40][keep[:40]], vectors[:40][keep[:40]], 10))


@pytest.mark.parametrize("allowed_count", [0, 1, 4])
def test_filter_smaller_than_k_is_clamped(
    allowed_count: int, index: VectorIndex, vectors: np.ndarray, queries: np.ndarray
) -> None:
    """An allowed set smaller than k (or empty) yields just its members: the result is sized by the filter."""
    chosen = np.arange(allowed_count) * 11
    distances, ids = index.search(queries, 10, IdFilter.of(_ids(COUNT)[chosen]))
    assert ids.shape == (len(queries), allowed_count)
    _assert_same_neighbours((distances, ids), _reference(queries, _ids(COUNT)[chosen], vectors[chosen], allowed_count))


def test_filter_naming_ids_the_index_lacks_pads(index: VectorIndex, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Allowed ids that are not in the index (rows added after it was loaded) are padding: id -1, score -inf."""
    allowed = np.concatenate([_ids(COUNT)[:3], [5, 6]])
    distances, ids = index.search(queries, 10, IdFilter.of(allowed))
    assert ids.shape == (len(queries), 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(distances[:, 3:]).all()
    _assert_same_neighbours((distances[:, :3], ids[:, :3]), _reference(queries, _ids(COUNT)[:3], vectors[:3], 3))


@pytest.mark.parametrize("k", [1, 10, COUNT + 20])
@pytest.mark.parametrize("removed", [False, True])
def test_replica_search_maps_positions_to_ids_like_search(
    k: int, removed: bool, index: VectorIndex, queries: np.ndarray
) -> None:
    """The GPU path's position -> id mapping, exercised on the CPU flat index as the replica.

    This touches the private `_search_replica` on purpose: the GPU replica cannot be built with
    faiss-cpu, but the mapping from row positions back to ids (which shift after removals) and the
    padding for k > ntotal are plain numpy that must agree with the CPU `search`.
    """
    if removed:
        index.remove(_ids(COUNT)[[0, 5, 6, 250, COUNT - 1]])
    replica = index._search_replica(index._cpu.index, queries, min(k, len(index)))
    expected = index.search(queries, k)
    np.testing.assert_array_equal(replica[1], expected[1])
    np.testing.assert_array_equal(replica[0], expected[0])
    assert replica[1].dtype == np.int64 and replica[0].dtype == np.float32


def test_replica_search_on_an_empty_index() -> None:
    """The replica path on an empty index returns only id -1 / score -inf, as search does."""
    empty = VectorIndex(DIM, gpu="never")
    queries = unit_vectors(2, 5, DIM)
    replica = empty._search_replica(empty._cpu.index, queries, 4)
    np.testing.assert_array_equal(replica[1], np.full((2, 4), -1))  # faiss pads an empty flat index
    assert np.isneginf(replica[0]).all()


def test_save_load_round_trip(tmp_path: Path, index: VectorIndex, queries: np.ndarray) -> None:
    """A saved and reloaded index has the same ids, vectors and search results."""
    path = tmp_path / "index.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, gpu="never")
    assert loaded.dim == DIM and len(loaded) == COUNT
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    np.testing.assert_array_equal(loaded.reconstruct(_ids(COUNT)), index.reconstruct(_ids(COUNT)))
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)


def test_save_replaces_an_existing_file_and_leaves_no_temp_files(tmp_path: Path, index: VectorIndex) -> None:
    """Saving over an existing file replaces its content; only the target file remains in the folder."""
    path = tmp_path / "index.faiss"
    index.save(path)
    smaller = VectorIndex(DIM, gpu="never")
    smaller.add([42], unit_vectors(1, 6, DIM))
    smaller.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
    reloaded = VectorIndex.load(path, gpu="never")
    np.testing.assert_array_equal(reloaded.ids(), [42])


def test_saved_file_is_private_whatever_the_umask(tmp_path: Path, index: VectorIndex) -> None:
    """The FAISS file holds a library's vectors: it is written 0600 even under a permissive umask."""
    previous = os.umask(0)
    try:
        index.save(tmp_path / "index.faiss")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "index.faiss").stat().st_mode) == 0o600


def test_failed_save_removes_its_temp_file(tmp_path: Path, index: VectorIndex) -> None:
    """When the final rename fails (the target is a folder), the error surfaces and no temp file is left."""
    target = tmp_path / "index.faiss"
    target.mkdir()
    with pytest.raises(OSError):
        index.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
    assert target.is_dir()


@pytest.mark.skipif(not FAISS_CPU_BUILD, reason="faiss was built with GPU support")
def test_gpu_count_is_zero_on_faiss_cpu() -> None:
    """This machine's faiss-cpu build reports no GPU, so `auto` searches on the CPU."""
    assert gpu_count() == 0
    assert VectorIndex(DIM).on_gpu is False


@pytest.mark.skipif(gpu_count() > 0, reason="faiss sees a GPU here")
def test_gpu_always_without_gpu_raises() -> None:
    """Asking for the GPU where faiss has none is an error, not a silent CPU fallback."""
    with pytest.raises(RuntimeError, match="no GPU"):
        VectorIndex(DIM, gpu="always")


def test_invalid_gpu_choice_raises() -> None:
    """Only auto/never/always are accepted."""
    with pytest.raises(ValueError, match="gpu must be one of"):
        VectorIndex(DIM, gpu="sometimes")


@pytest.mark.parametrize("operation", ["add", "search", "filtered search"])
def test_wrong_dimension_raises(operation: str, index: VectorIndex) -> None:
    """Vectors of another dimension are refused with ValueError, not passed to faiss."""
    wrong = unit_vectors(2, 7, DIM + 1)
    with pytest.raises(ValueError, match="dimension"):
        if operation == "add":
            index.add([1, 2], wrong)
        elif operation == "search":
            index.search(wrong, 3)
        else:
            index.search(wrong, 3, IdFilter.of(_ids(COUNT)[:5]))
    assert len(index) == COUNT


def test_ids_and_vectors_count_mismatch_raises(index: VectorIndex) -> None:
    """add refuses a different number of ids and vectors."""
    with pytest.raises(ValueError, match="ids for"):
        index.add([1, 2, 3], unit_vectors(2, 8, DIM))
    assert len(index) == COUNT


# --- IVF: the approximate kind -----------------------------------------------------------------

IVF_COUNT = 10_000


def _clustered(rows: int, seed: int, dim: int = DIM, clusters: int = 80) -> np.ndarray:
    """Unit vectors around `clusters` random centres, like image embeddings of a photo library."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, rows)] + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """Rounded to float16, as the store keeps them: an IVF index keeps exactly those values (SQfp16 codes)."""
    return as_stored(_clustered(IVF_COUNT, 11))


@pytest.fixture(scope="module")
def ivf_queries() -> np.ndarray:
    """Off-data queries (like a text query against image vectors) and near-data ones."""
    near = _clustered(100, 11)[:50] + 0.3 * unit_vectors(50, 13, DIM)
    return np.concatenate([unit_vectors(50, 12, DIM), near / np.linalg.norm(near, axis=1, keepdims=True)])


def _ivf(vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    built = VectorIndex.ivf(DIM, nlist_for(len(vectors)), vectors, gpu="never")
    built.add(ids, vectors)
    return built


@pytest.fixture(scope="module")
def ivf_index(clustered: np.ndarray) -> VectorIndex:
    """An IVF index of the clustered set, shared by the tests that only search it."""
    return _ivf(clustered, _ids(IVF_COUNT))


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)]))


def test_ivf_recall_at_10_against_exact(ivf_index: VectorIndex, clustered: np.ndarray, ivf_queries: np.ndarray) -> None:
    """An IVF index with the configured nprobe finds >= 97% of the exact top 10, and keeps the ids."""
    ids, ivf = _ids(IVF_COUNT), ivf_index
    assert ivf.kind == "ivf" and len(ivf) == IVF_COUNT
    np.testing.assert_array_equal(np.sort(ivf.ids()), ids)
    got = ivf.search(ivf_queries, 10)
    want = _reference(ivf_queries, ids, clustered, 10)
    assert _recall(got[1], want[1]) >= 0.97
    np.testing.assert_array_equal(ivf.reconstruct(ids[[5, 9000]]), clustered[[5, 9000]])


def test_ivf_stays_correct_through_adds_and_removes(clustered: np.ndarray, ivf_queries: np.ndarray) -> None:
    """Trained on the first half only, then the rest added and a third removed (and one re-added with a
    new vector): the ids and vectors are exactly the survivors, and recall holds without retraining."""
    ids = _ids(IVF_COUNT)
    half = IVF_COUNT // 2
    ivf = _ivf(clustered[:half], ids[:half])
    ivf.add(ids[half:], clustered[half:])
    gone = ids[::3]
    assert ivf.remove(np.concatenate([gone, [-5]])) == len(gone)
    assert ivf.remove(gone) == 0
    keep = np.ones(IVF_COUNT, dtype=bool)
    keep[::3] = False
    assert not ivf.contains(int(gone[0])) and ivf.contains(int(ids[1]))
    ivf.add(gone[:1], clustered[1:2])
    keep_ids, keep_vectors = np.append(ids[keep], gone[0]), np.concatenate([clustered[keep], clustered[1:2]])
    np.testing.assert_array_equal(np.sort(ivf.ids()), np.sort(keep_ids))
    np.testing.assert_array_equal(ivf.reconstruct(keep_ids), keep_vectors)
    got = ivf.search(ivf_queries, 10)
    assert not np.isin(got[1], gone[1:]).any()
    assert _recall(got[1], _reference(ivf_queries, keep_ids, keep_vectors, 10)[1]) >= 0.97


def test_ivf_search_never_comes_back_short(ivf_index: VectorIndex, clustered: np.ndarray) -> None:
    """k larger than what nprobe lists hold: more lists are visited until k results come back."""
    distances, ids = ivf_index.search(clustered[:3], 2_000)
    assert (ids >= 0).all() and np.isfinite(distances).all()
    assert all(len(set(row.tolist())) == 2_000 for row in ids)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_filter_keeping_one_in_a_thousand_is_complete_and_exact(
    kind: str, ivf_index: VectorIndex, clustered: np.ndarray, ivf_queries: np.ndarray
) -> None:
    """A filter keeping 0.1% of the vectors (10 of 10 000, k = 10) returns exactly the exact top-k over
    them, for flat and IVF: applied inside faiss, never by cutting an unfiltered top-k."""
    ids = _ids(IVF_COUNT)
    built = ivf_index if kind == "ivf" else VectorIndex(DIM, gpu="never")
    if kind == "flat":
        built.add(ids, clustered)
    chosen = np.random.default_rng(14).choice(IVF_COUNT, size=IVF_COUNT // 1000, replace=False)
    for allowed in (ids[chosen], ids[chosen[:4]]):
        got = built.search(ivf_queries, 10, IdFilter.of(allowed))
        picked = np.isin(ids, allowed)
        _assert_same_neighbours(got, _reference(ivf_queries, ids[picked], clustered[picked], min(10, len(allowed))))


@pytest.mark.parametrize("mmap", [False, True])
def test_ivf_save_load_round_trip(tmp_path: Path, clustered: np.ndarray, ivf_queries: np.ndarray, mmap: bool) -> None:
    """A saved IVF index reloads (whole or memory-mapped) with the same ids, vectors and results."""
    ids = _ids(IVF_COUNT)
    ivf = _ivf(clustered, ids)
    ivf.remove(ids[:100])
    ivf.save(tmp_path / "ivf.faiss")
    loaded = VectorIndex.load(tmp_path / "ivf.faiss", gpu="never", mmap=mmap)
    assert (loaded.kind, len(loaded), loaded.read_only) == ("ivf", IVF_COUNT - 100, mmap)
    np.testing.assert_array_equal(np.sort(loaded.ids()), ids[100:])
    np.testing.assert_array_equal(loaded.reconstruct(ids[[100, 5000]]), clustered[[100, 5000]])
    for got, want in zip(loaded.search(ivf_queries, 10), ivf.search(ivf_queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_mapped_ivf_searches_without_prefetch_threads(tmp_path: Path, clustered: np.ndarray) -> None:
    """faiss maps IVF lists as `OnDiskInvertedLists`, which start 32 prefetch threads per search by default
    (a query 2.6x slower at 1M, an exhaustive filtered one 7x, with every page already cached): a mapped
    `VectorIndex` turns that off, and still answers as the index read whole does."""
    ivf = _ivf(clustered, _ids(IVF_COUNT))
    ivf.save(tmp_path / "ivf.faiss")
    raw = faiss.read_index(str(tmp_path / "ivf.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    assert faiss.downcast_InvertedLists(raw.invlists).prefetch_nthread > 0  # faiss's default, the cause
    mapped = VectorIndex.load(tmp_path / "ivf.faiss", gpu="never", mmap=True)
    assert faiss.downcast_InvertedLists(mapped._cpu.invlists).prefetch_nthread == 0
    allowed = IdFilter.of(_ids(IVF_COUNT)[::1000])
    for got, want in zip(
        mapped.search(clustered[:5], 10, allowed), ivf.search(clustered[:5], 10, allowed), strict=True
    ):
        np.testing.assert_array_equal(got, want)


_MAPPED_LOAD_CHILD = """
import os, sys
import numpy as np
from retrieval.index import VectorIndex

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

path = sys.argv[1]
before = resident()
mapped = VectorIndex.load(path, gpu="never", mmap=True)
after_mapped = resident()
whole = VectorIndex.load(path, gpu="never")
after_whole = resident()
query = np.ones((1, mapped.dim), dtype=np.float32) / np.sqrt(mapped.dim)
same = bool((mapped.search(query, 5)[1] == whole.search(query, 5)[1]).all())
print(after_mapped - before, after_whole - after_mapped, same)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from Linux's /proc")
def test_memory_mapped_flat_load_does_not_read_the_vectors(tmp_path: Path) -> None:
    """Loading a 40 MB flat file memory-mapped leaves the vectors on disk until a search touches them;
    loading it whole copies them into memory. Measured in a fresh process, whose allocator has no freed
    memory to hand back (in the test process a whole load can reuse pages and hide its cost)."""
    rows, dim = 20_000, 512
    built = VectorIndex(dim, gpu="never")
    built.add(np.arange(rows), unit_vectors(rows, 1, dim))
    built.save(tmp_path / "big.faiss")
    child = run_python(_MAPPED_LOAD_CHILD, str(tmp_path / "big.faiss"))
    assert child.returncode == 0, child.stderr
    mapped_growth, whole_growth, same = child.stdout.split()
    assert int(mapped_growth) < 8 << 20
    assert int(whole_growth) > 30 << 20
    assert same == "True"
