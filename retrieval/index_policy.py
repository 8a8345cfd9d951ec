"""Which FAISS index a library gets, how it is built from the store, and when it is rebuilt.

The constants are measured (docs/ann.md, on realistic synthetic CLIP-like vectors with text-like queries):
- Below `ANN_MIN_VECTORS` (20k) vectors the index is exact (`flat`): a full scan stays under 3 ms there.
  From there on it is an IVF index with nlist = IVF_LISTS_PER_SQRT * sqrt(n) rounded to a power of two
  (capped so that each list has IVF_MIN_POINTS_PER_LIST training vectors), k-means-trained on a random
  sample of IVF_TRAIN_POINTS_PER_LIST * nlist vectors of the whole library (recall stops improving near 40
  per list; k-means costs grow with the sample), its vectors kept as IVF_CODES; searches visit
  `nprobe_for(nlist)` = 2 sqrt(nlist) lists (retrieval/index.py).
- Adds and removes never retrain: the IVF lists stay valid as vectors come and go, only the centroids age.
  `rebuild_reason` says when the index is rebuilt (and retrained) from the store instead:
  * a flat index reached ANN_MIN_VECTORS (exact search is getting slow): it becomes IVF;
  * an IVF index fell below ANN_FLAT_AGAIN_BELOW (small enough to be exact again; the gap below the
    threshold keeps a library near it from flapping between kinds);
  * an IVF index holds ANN_RETRAIN_GROWTH (4) times the vectors the library had when it was trained.
    Why 4x: recall at a given nprobe depends on nlist, hardly on n (IVF1024 needs nprobe 48 for 0.97 at
    100k and at 1M), but every list grows with n, so a query's cost grows linearly with it. At 4x growth
    the sqrt rule asks for twice the lists, and each list is twice as long as when trained: the query
    costs twice what a retrained index would. Retraining then (one build, the indexer's cost, never a
    search's) keeps a query within 2x of its best cost, and absorbs a drift of the library's content.
  The library applies it when an index run saves the index, so the indexer pays for retraining, never a
  search. The store stays the source of truth: any index can be rebuilt from it at any time.
- From `LARGE_MIN_VECTORS` on (docs/capacity.md) the index is the large kind: `IVF{nlist},PQ{m}` with the same
  nlist rule and training sample, built in shards by worker processes and merged on disk
  (retrieval/large_index.py), searched with exact re-ranking; it falls back to the SQfp16 IVF below
  `LARGE_AGAIN_BELOW` and is retrained at the same 4x growth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from retrieval.config import (
    ANN_FLAT_AGAIN_BELOW,
    ANN_MIN_VECTORS,
    ANN_RETRAIN_GROWTH,
    IVF_CODES,
    IVF_LISTS_PER_SQRT,
    IVF_MIN_POINTS_PER_LIST,
    IVF_TRAIN_POINTS_PER_LIST,
    IVF_TRAIN_SEED,
    LARGE_AGAIN_BELOW,
    LARGE_BUILD_WORKERS,
    LARGE_CODES,
    LARGE_MIN_VECTORS,
    LARGE_PQ_TRAIN_POINTS,
)
from retrieval.index import FLAT, IVF, LARGE, VectorIndex
from retrieval.large_index import build_large, build_workdir, cpu_count, pq_subquantizers, sample, spool
from retrieval.storage.vectors import STORED_DTYPE


def kind_for(count: int, min_vectors: int | None = None, large_min_vectors: int | None = None) -> str:
    """`flat` below `min_vectors` (default ANN_MIN_VECTORS), `large` from `large_min_vectors` (default
    LARGE_MIN_VECTORS) on, else `ivf`."""
    if count >= (LARGE_MIN_VECTORS if large_min_vectors is None else large_min_vectors):
        return LARGE
    return IVF if count >= (ANN_MIN_VECTORS if min_vectors is None else min_vectors) else FLAT


def _power_of_two_below(value: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(1.0, value))))


def nlist_for(count: int) -> int:
    """IVF_LISTS_PER_SQRT * sqrt(count) rounded to the nearest power of two, with at least
    IVF_MIN_POINTS_PER_LIST vectors per list."""
    wanted = IVF_LISTS_PER_SQRT * math.sqrt(max(1, count))
    nearest = 1 << max(0, round(math.log2(wanted)))
    return max(1, min(nearest, _power_of_two_below(count / IVF_MIN_POINTS_PER_LIST)))


def rebuild_reason(index: VectorIndex) -> str | None:
    """Why `index` should be rebuilt from the store for its current size, or None to keep it."""
    count = len(index)
    if index.kind == FLAT and count >= ANN_MIN_VECTORS:
        return f"{count} vectors reached ANN_MIN_VECTORS ({ANN_MIN_VECTORS}): switching to IVF"
    if index.kind == IVF and count < ANN_FLAT_AGAIN_BELOW:
        return f"{count} vectors fell below ANN_FLAT_AGAIN_BELOW ({ANN_FLAT_AGAIN_BELOW}): exact again"
    if index.kind != LARGE and count >= LARGE_MIN_VECTORS:
        return f"{count} vectors reached LARGE_MIN_VECTORS ({LARGE_MIN_VECTORS}): switching to the large index"
    if index.kind == LARGE and count < LARGE_AGAIN_BELOW:
        return f"{count} vectors fell below LARGE_AGAIN_BELOW ({LARGE_AGAIN_BELOW}): back to the SQfp16 IVF"
    if index.kind in (IVF, LARGE) and count >= ANN_RETRAIN_GROWTH * max(1, index.trained_on):
        return f"{count} vectors, {ANN_RETRAIN_GROWTH:g}x the {index.trained_on} it was trained at: retraining"
    return None


def build_index(
    dim: int,
    count: int,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str | None = None,
    nlist: int | None = None,
    codes: str | None = None,
    gpu: str = "auto",
    workers: int | None = None,
    workdir: Path | None = None,
) -> VectorIndex:
    """The index the policy gives a library of about `count` vectors (or of `kind`, with `nlist` lists and
    `codes`, to compare), holding every (ids, vectors) batch. For IVF the batches are held as float16 (the
    store's own values, half of float32) until the sample is trained on, then added chunk by chunk. The
    large kind spools them to a float16 file in a scratch folder under `workdir` (default: the system's
    temporary folder) and adds them in shards with `workers` processes (default LARGE_BUILD_WORKERS; 0: here)."""
    kind = kind or kind_for(count)
    if kind == LARGE:
        return _build_large(dim, count, batches, nlist, codes or LARGE_CODES, workers, workdir)
    codes = codes or IVF_CODES
    if kind == FLAT:
        index = VectorIndex(dim, gpu=gpu)
        for ids, vectors in batches:
            index.add(ids, vectors)
        return index
    held = [(ids, np.asarray(vectors, dtype=STORED_DTYPE)) for ids, vectors in batches]
    total = sum(len(ids) for ids, _ in held)
    lists = nlist or nlist_for(total)
    training = _sample(held, total, IVF_TRAIN_POINTS_PER_LIST * lists)
    index = VectorIndex.ivf(dim, lists, training, codes=codes, trained_on=total, gpu=gpu)
    del training
    held.reverse()
    while held:  # add and drop batch by batch, so memory peaks near one float16 copy of the vectors
        ids, vectors = held.pop()
        index.add(ids, vectors)
    return index


def _sample(batches: list[tuple[np.ndarray, np.ndarray]], total: int, size: int) -> np.ndarray:
    """`size` vectors drawn evenly at random from all batches (all of them when there are fewer)."""
    rng = np.random.default_rng(IVF_TRAIN_SEED)
    chosen = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for _, vectors in batches:
        inside = chosen[(chosen >= start) & (chosen < start + len(vectors))] - start
        parts.append(vectors[inside].astype(np.float32))
        start += len(vectors)
    return np.concatenate(parts)


def _build_large(
    dim: int,
    count: int,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    nlist: int | None,
    codes: str,
    workers: int | None,
    workdir: Path | None,
) -> VectorIndex:
    pq_subquantizers(codes)  # the large kind keeps PQ codes (SQ8 is for comparisons in benchmarks only)
    scratch = build_workdir(workdir)
    folder = Path(scratch.name)
    source = spool(batches, count, dim, folder)
    lists = nlist or nlist_for(source.count)
    training = sample(source, max(IVF_TRAIN_POINTS_PER_LIST * lists, LARGE_PQ_TRAIN_POINTS))
    if workers is None:
        workers = cpu_count() if LARGE_BUILD_WORKERS is None else LARGE_BUILD_WORKERS
    index = build_large(dim, source, lists, training, codes, folder, workers=workers)
    for path in (source.vectors, *([source.ids] if source.ids else [])):
        path.unlink(missing_ok=True)
    return VectorIndex(dim, gpu="never", index=index, trained_on=source.count, scratch=scratch)
