"""The ANN index as the policy builds it, against exact search, on realistic synthetic CLIP-like vectors
(`retrieval.quality.synthetic_vectors`: uneven clusters, anisotropy, a modality gap between text-like
queries and the images). Scaled down (64-d, 16k vectors) with the size threshold passed as a parameter
(`kind=`), the policy's own nlist, training sample, codes and nprobe rule otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.filters import IdFilter
from retrieval.index import VectorIndex
from retrieval.index_policy import build_index, nlist_for
from retrieval.quality.synthetic_vectors import ClipLikeSpace
from retrieval.storage.vectors import as_stored

DIM, COUNT, K = 64, 16_384, 10
RECALL = 0.97


@pytest.fixture(scope="module")
def space() -> ClipLikeSpace:
    return ClipLikeSpace(dim=DIM, clusters=256, topics=16, seed=3)


@pytest.fixture(scope="module")
def vectors(space: ClipLikeSpace) -> np.ndarray:
    return as_stored(space.image_vectors(2 * COUNT))  # the store's float16 values


@pytest.fixture(scope="module")
def queries(space: ClipLikeSpace) -> dict[str, np.ndarray]:
    return {"text": space.text_queries(200, seed=1)[0], "image": space.image_queries(200, COUNT, seed=1)[0]}


def _ids(count: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.int64) * 3 + 1  # sparse, like a store after deletes


def _ivf(ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
    return build_index(
        DIM, len(ids), [(ids[:6000], vectors[:6000]), (ids[6000:], vectors[6000:])], kind="ivf", gpu="never"
    )


@pytest.fixture(scope="module")
def ivf(vectors: np.ndarray) -> VectorIndex:
    return _ivf(_ids(COUNT), vectors[:COUNT])


def _exact(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int = K) -> np.ndarray:
    scores = queries @ vectors.T
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


@pytest.mark.parametrize("kind", ["text", "image"])
def test_policy_ivf_reaches_the_recall_target(
    kind: str, ivf: VectorIndex, vectors: np.ndarray, queries: dict[str, np.ndarray]
) -> None:
    """The policy's IVF (nlist 4 sqrt(n) as a power of two, nprobe 2 sqrt(nlist)) finds >= 97% of the exact
    top 10 for text-like queries (another cone than the images) and image-like ones."""
    assert (ivf.kind, len(ivf), ivf.nprobe) == ("ivf", COUNT, 32) and nlist_for(COUNT) == 256
    found = ivf.search(queries[kind], K)[1]
    assert _recall(found, _exact(queries[kind], _ids(COUNT), vectors[:COUNT])) >= RECALL


def test_fewer_probes_lose_recall(ivf: VectorIndex, vectors: np.ndarray, queries: dict[str, np.ndarray]) -> None:
    """The recall test can fail: the same index probing 2 lists misses the target on text-like queries."""
    ivf.nprobe = 2
    try:
        found = ivf.search(queries["text"], K)[1]
    finally:
        ivf.nprobe = 32
    assert _recall(found, _exact(queries["text"], _ids(COUNT), vectors[:COUNT])) < RECALL


@pytest.mark.parametrize("share", [0.001, 0.01, 0.1])
def test_filtered_search_is_complete(
    share: float, ivf: VectorIndex, vectors: np.ndarray, queries: dict[str, np.ndarray]
) -> None:
    """A filter keeping `share` of the images (random ids: spread over every list, the hard case) returns k
    results for every query, and the exact filtered top-k at 0.1% (where every list is probed), >= 97% of it
    otherwise; with an exclusion on top, the excluded ids never come back and k results still do."""
    ids = _ids(COUNT)
    rng = np.random.default_rng(int(share * 1000))
    picked = np.sort(rng.choice(COUNT, size=max(K + 2, int(COUNT * share)), replace=False))
    exact = _exact(queries["text"], ids[picked], vectors[picked])
    found = ivf.search(queries["text"], K, IdFilter.of(ids[picked]))[1]
    assert (found >= 0).all()
    assert _recall(found, exact) == 1.0 if share == 0.001 else _recall(found, exact) >= RECALL
    left_out = exact[:, 0]
    combined = IdFilter.of(ids[picked], left_out)
    found = ivf.search(queries["text"], K, combined)[1]
    assert (found >= 0).all() and not np.isin(found, left_out).any()


def test_a_filter_keeping_fewer_than_k_returns_all_of_them(ivf: VectorIndex, queries: dict[str, np.ndarray]) -> None:
    allowed = _ids(COUNT)[[5, 900, 16_000]]
    scores, found = ivf.search(queries["text"][:20], K, IdFilter.of(allowed))
    assert found.shape == (20, 3) and all(set(row) == set(allowed) for row in found.tolist())
    assert np.isfinite(scores).all()


def test_adds_and_deletes_without_retraining_keep_recall(vectors: np.ndarray, queries: dict[str, np.ndarray]) -> None:
    """Trained on the first 16k, then 16k more added (2x growth, below the 4x retraining point) and a third of
    all removed: the index holds exactly the survivors and still meets the target against exact."""
    ids = _ids(2 * COUNT)
    index = _ivf(ids[:COUNT], vectors[:COUNT])
    index.add(ids[COUNT:], vectors[COUNT:])
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    keep = np.ones(2 * COUNT, dtype=bool)
    keep[::3] = False
    np.testing.assert_array_equal(np.sort(index.ids()), ids[keep])
    np.testing.assert_array_equal(index.reconstruct(ids[keep][:50]), vectors[keep][:50])
    for kind in ("text", "image"):
        found = index.search(queries[kind], K)[1]
        assert not np.isin(found, gone).any()
        assert _recall(found, _exact(queries[kind], ids[keep], vectors[keep])) >= RECALL
