"""Which FAISS index a library gets, how it is built from the store, and when it is rebuilt.

- Below `ANN_MIN_VECTORS` vectors the index is exact (`flat`). From there on it is an IVF index with
  nlist = IVF_LISTS_PER_SQRT * sqrt(n) lists (capped so that each list has IVF_MIN_POINTS_PER_LIST
  training vectors), k-means-trained on IVF_TRAIN_POINTS_PER_LIST * nlist vectors sampled over the whole
  library; searches visit `IVF_NPROBE` lists.
- Adds and removes never retrain: the IVF lists stay valid as vectors come and go, only the centroids age.
  `rebuild_reason` says when the index is rebuilt (and retrained) from the store instead:
  * a flat index reached ANN_MIN_VECTORS (exact search is getting slow): it becomes IVF;
  * an IVF index fell below ANN_FLAT_AGAIN_BELOW (small enough to be exact again; the gap below the
    threshold keeps a library near it from flapping between kinds);
  * an IVF index holds ANN_RETRAIN_GROWTH times the vectors the library had when it was trained: its
    centroids were fit to a much smaller library, so lists grow long and unbalanced and recall per probe
    drifts (and nlist, sized by sqrt(n), is too small).
  The library applies it when an index run saves the index, so the indexer pays for retraining, never a
  search. The store stays the source of truth: any index can be rebuilt from it at any time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from retrieval.config import (
    ANN_FLAT_AGAIN_BELOW,
    ANN_MIN_VECTORS,
    ANN_RETRAIN_GROWTH,
    IVF_LISTS_PER_SQRT,
    IVF_MIN_POINTS_PER_LIST,
    IVF_TRAIN_POINTS_PER_LIST,
    IVF_TRAIN_SEED,
)
from retrieval.index import FLAT, IVF, VectorIndex


def kind_for(count: int) -> str:
    return IVF if count >= ANN_MIN_VECTORS else FLAT


def nlist_for(count: int) -> int:
    wanted = int(IVF_LISTS_PER_SQRT * math.sqrt(max(1, count)))
    return max(1, min(wanted, count // IVF_MIN_POINTS_PER_LIST))


def rebuild_reason(index: VectorIndex) -> str | None:
    """Why `index` should be rebuilt from the store for its current size, or None to keep it."""
    count = len(index)
    if index.kind == FLAT and count >= ANN_MIN_VECTORS:
        return f"{count} vectors reached ANN_MIN_VECTORS ({ANN_MIN_VECTORS}): switching to IVF"
    if index.kind == IVF and count < ANN_FLAT_AGAIN_BELOW:
        return f"{count} vectors fell below ANN_FLAT_AGAIN_BELOW ({ANN_FLAT_AGAIN_BELOW}): exact again"
    if index.kind == IVF and count >= ANN_RETRAIN_GROWTH * max(1, index.trained_on):
        return f"{count} vectors, {ANN_RETRAIN_GROWTH:g}x the {index.trained_on} it was trained at: retraining"
    return None


def build_index(
    dim: int,
    count: int,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str | None = None,
    gpu: str = "auto",
) -> VectorIndex:
    """The index the policy gives a library of about `count` vectors (or of `kind`, to compare kinds),
    holding every (ids, vectors) batch."""
    if (kind or kind_for(count)) == FLAT:
        index = VectorIndex(dim, gpu=gpu)
        for ids, vectors in batches:
            index.add(ids, vectors)
        return index
    held = list(batches)  # training needs a sample of the whole library before the first add
    total = sum(len(ids) for ids, _ in held)
    nlist = nlist_for(total)
    training = _sample(held, total, IVF_TRAIN_POINTS_PER_LIST * nlist)
    index = VectorIndex.ivf(dim, nlist, training, trained_on=total, gpu=gpu)
    while held:  # add and drop batch by batch, so memory peaks near one copy of the vectors
        ids, vectors = held.pop(0)
        index.add(ids, vectors)
    return index


def _sample(batches: list[tuple[np.ndarray, np.ndarray]], total: int, size: int) -> np.ndarray:
    """`size` vectors drawn evenly at random from all batches (all of them when there are fewer)."""
    rng = np.random.default_rng(IVF_TRAIN_SEED)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for _, vectors in batches:
        inside = chosen[(chosen >= start) & (chosen < start + len(vectors))] - start
        parts.append(vectors[inside])
        start += len(vectors)
    return np.concatenate(parts)
