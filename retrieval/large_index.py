"""The large-library index: IVF with product-quantised codes, built in shards, merged on disk, kept in one file.

For libraries whose float16 vectors no longer fit comfortably in RAM (docs/capacity.md). The way autofaiss and
clip-retrieval build billion-scale indexes, with faiss's own tools:

1. the vectors are spooled once to a float16 file (`spool`), a random sample drawn on the way;
2. `train_large`: k-means for the lists and the product quantiser on that sample (an empty index);
3. `add_in_shards`: worker processes each add a slice of the spool to a copy of the empty index and write it
   as a shard file (adding is per vector, so shards add up to exactly what one add of all would hold);
4. `merge_shards`: `faiss.contrib.ondisk.merge_ondisk` concatenates the shards' lists, list by list, into
   one `OnDiskInvertedLists` file: never more than a shard's worth of lists in RAM;
5. `write_streamed` writes that index as one ordinary faiss file (the header faiss writes for the trained
   index, then its inverted lists copied list by list from the on-disk lists), so the library keeps one
   file per generation, fingerprinted and renamed into place like any other, and a search maps it
   (faiss reads a mapped IVF file's lists as `OnDiskInvertedLists` over the file itself).

PQ codes lose ranking precision, so a search fetches `LARGE_RERANK_FACTOR * k` candidates and `rerank`
re-scores them exactly against the stored float16 vectors (the store's, read by id).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.config import LARGE_ADD_CHUNK, LARGE_SHARD_VECTORS, LARGE_TRAIN_SEED

_faiss: Any = faiss

VectorSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Given ids, the (ids found, their vectors as float32 rows) of those the source holds, in any order."""

_EMPTY_LISTS_TAIL = 32
"""Bytes faiss writes for empty array lists: b"ilar", nlist, code_size, b"sprs", an empty size vector."""


@dataclass(frozen=True)
class Spool:
    """Vectors (float16, `count` x `dim`) and their ids (int64; None: the positions) as .npy files."""

    vectors: Path
    ids: Path | None
    count: int


def pq_subquantizers(codes: str) -> int:
    """m of `PQ{m}` (m bytes per vector, 8 bits per sub-quantiser). ValueError for another name."""
    if not codes.startswith("PQ") or not codes[2:].isdigit() or int(codes[2:]) < 1:
        raise ValueError(f"`codes` of the large index must be `PQ<m>` (e.g. PQ64), not {codes!r}")
    return int(codes[2:])


def spool(batches: Iterable[tuple[np.ndarray, np.ndarray]], count: int, dim: int, folder: Path) -> Spool:
    """Write up to `count` (ids, vectors) batches to float16 and int64 .npy files under `folder`."""
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float16, shape=(count, dim))
    ids = np.lib.format.open_memmap(folder / "ids.npy", mode="w+", dtype=np.int64, shape=(count,))
    written = 0
    for batch_ids, batch in batches:
        take = min(len(batch_ids), count - written)
        ids[written : written + take] = batch_ids[:take]
        vectors[written : written + take] = batch[:take]
        written += take
    vectors.flush()
    ids.flush()
    del vectors, ids
    if written != count:  # the store counted more rows than its snapshot gave: keep what was read
        _truncate(folder, written, dim)
    return Spool(folder / "vectors.npy", folder / "ids.npy", written)


def _truncate(folder: Path, written: int, dim: int) -> None:
    for name, shape in (("vectors.npy", (written, dim)), ("ids.npy", (written,))):
        kept = np.array(np.load(folder / name, mmap_mode="r")[:written])
        np.save(folder / name, kept.reshape(shape))


def sample(source: Spool, size: int) -> np.ndarray:
    """`size` vectors (all when fewer) drawn at random from the spool, as float32."""
    rng = np.random.default_rng(LARGE_TRAIN_SEED)
    chosen = np.sort(rng.choice(source.count, size=min(size, source.count), replace=False))
    return np.asarray(np.load(source.vectors, mmap_mode="r")[chosen], dtype=np.float32)


def train_large(dim: int, nlist: int, training: np.ndarray, codes: str, quantizer: Any = None) -> Any:
    """An empty `IVF{nlist},PQ{m}` inner-product index (residual codes, no direct map) trained on `training`
    (`SQ8` codes too, to compare). A trained `quantizer` (nlist centroids) is reused, not retrained."""
    if codes != "SQ8" and dim % pq_subquantizers(codes):
        raise ValueError(f"`codes` {codes}: the dimension {dim} must be a multiple of {codes[2:]}")
    if quantizer is None:
        quantizer = _faiss.IndexFlatIP(dim)
    if codes == "SQ8":
        qtype = _faiss.ScalarQuantizer.QT_8bit
        index = _faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, _faiss.METRIC_INNER_PRODUCT)
    else:
        index = _faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(codes), 8, _faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = LARGE_TRAIN_SEED
    index.train(np.ascontiguousarray(training, dtype=np.float32))
    return index


def _add_range(index: Any, source: Spool, start: int, stop: int) -> None:
    vectors = np.load(source.vectors, mmap_mode="r")
    ids = np.load(source.ids, mmap_mode="r") if source.ids is not None else None
    for begin in range(start, stop, LARGE_ADD_CHUNK):
        end = min(stop, begin + LARGE_ADD_CHUNK)
        chunk_ids = np.arange(begin, end, dtype=np.int64) if ids is None else np.array(ids[begin:end])
        index.add_with_ids(np.asarray(vectors[begin:end], dtype=np.float32), chunk_ids)


def _add_shard(trained: str, source: Spool, start: int, stop: int, out: str, threads: int) -> str:
    """Worker: the trained empty index at `trained` plus vectors [start, stop) of `source`, written to `out`."""
    _faiss.omp_set_num_threads(threads)
    index = _faiss.read_index(trained)
    _add_range(index, source, start, stop)
    _faiss.write_index(index, out)
    return out


def shard_ranges(count: int, shard: int = LARGE_SHARD_VECTORS) -> list[tuple[int, int]]:
    return [(start, min(count, start + shard)) for start in range(0, count, max(1, shard))]


def add_in_shards(
    trained: Any, source: Spool, folder: Path, *, workers: int, shard: int = LARGE_SHARD_VECTORS
) -> list[Path]:
    """Shard files under `folder`, each the trained index plus one slice of `source`, in order. `workers`
    processes (0: in this process) add them, at most `workers` shards in flight, one faiss thread each."""
    trained_path = folder / "trained.faiss"
    _faiss.write_index(trained, str(trained_path))
    jobs = [(start, stop, str(folder / f"shard-{number:05d}.faiss")) for number, (start, stop) in
            enumerate(shard_ranges(source.count, shard))]  # fmt: skip
    if workers <= 0:
        threads = _faiss.omp_get_max_threads()
        return [Path(_add_shard(str(trained_path), source, start, stop, out, threads)) for start, stop, out in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: set[Any] = set()
        for start, stop, out in jobs:
            if len(pending) >= workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            pending.add(pool.submit(_add_shard, str(trained_path), source, start, stop, out, 1))
        for future in pending:
            future.result()
    return [Path(out) for _, _, out in jobs]


def merge_shards(trained: Any, shards: list[Path], ivfdata: Path) -> Any:
    """The trained (empty) index now holding every shard's lists, in shard order, in an
    `OnDiskInvertedLists` file at `ivfdata` (faiss.contrib.ondisk.merge_ondisk)."""
    from faiss.contrib.ondisk import merge_ondisk

    with _c_stdout_to_stderr():
        merge_ondisk(trained, [str(path) for path in shards], str(ivfdata))
    return trained


@contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """faiss's OnDiskInvertedLists printf()s "resizing FILE to N bytes" on the C stdout while merging; the
    library never prints there (an `index --json` run's output would carry the line), so file descriptor 1
    points at stderr meanwhile, C buffers flushed on both sides of the switch."""
    if os.name != "posix":
        yield
        return
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def build_large(
    dim: int, source: Spool, nlist: int, training: np.ndarray, codes: str, folder: Path, *, workers: int
) -> Any:
    """Train, add in shards, merge on disk: a faiss IVF-PQ index whose lists live in `folder`/merged.ivfdata."""
    trained = train_large(dim, nlist, training, codes)
    shards = add_in_shards(trained, source, folder, workers=workers)
    merged = merge_shards(trained, shards, folder / "merged.ivfdata")
    for path in [*shards, folder / "trained.faiss"]:
        path.unlink(missing_ok=True)
    return merged


def build_workdir(parent: Path | None) -> tempfile.TemporaryDirectory[str]:
    """A private scratch folder for a build (spool, shards, merged lists), removed with the index using it."""
    return tempfile.TemporaryDirectory(prefix="clipsearch-large-", dir=parent)


def is_on_disk(index: Any) -> bool:
    return isinstance(index, _faiss.IndexIVF) and isinstance(
        _faiss.downcast_InvertedLists(index.invlists), _faiss.OnDiskInvertedLists
    )


def write_streamed(index: Any, write: Callable[[bytes], Any]) -> None:
    """Write an IVF index whose lists are on disk as one ordinary faiss file (array inverted lists), list by
    list: the header is what faiss writes for the index with its lists emptied, the lists follow in faiss's
    `ilar` layout (sizes, then each list's codes and ids). Memory stays at one list."""
    lists = _faiss.downcast_InvertedLists(index.invlists)
    nlist, code_size = int(lists.nlist), int(lists.code_size)
    empty = _faiss.ArrayInvertedLists(nlist, code_size)
    owned = index.own_invlists
    index.own_invlists = False  # swap the lists out for a moment without freeing them
    index.replace_invlists(empty, False)
    try:
        header = bytes(_faiss.serialize_index(index))  # ntotal is the index's own: the lists follow
    finally:
        index.replace_invlists(lists, owned)
    if not header.endswith(b"ilar" + struct.pack("<QQ", nlist, code_size) + b"sprs" + struct.pack("<Q", 0)):
        raise RuntimeError("faiss wrote an unexpected header for empty inverted lists")
    header = header[:-_EMPTY_LISTS_TAIL]
    sizes = np.array([lists.list_size(number) for number in range(nlist)], dtype="<u8")
    write(header)
    write(b"ilar" + struct.pack("<QQ", nlist, code_size) + b"full" + struct.pack("<Q", nlist) + sizes.tobytes())
    for number in np.flatnonzero(sizes):
        size = int(sizes[number])
        codes, ids = lists.get_codes(int(number)), lists.get_ids(int(number))
        try:
            write(bytes(_faiss.rev_swig_ptr(codes, size * code_size)))
            write(_faiss.rev_swig_ptr(ids, size).astype("<i8").tobytes())
        finally:
            lists.release_codes(int(number), codes)
            lists.release_ids(int(number), ids)


def rerank(
    queries: np.ndarray, candidates: np.ndarray, vectors_of: VectorSource, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidate ids (-1: none), best `k` first: (D, I) with
    -inf / -1 where fewer than k candidates have a stored vector."""
    wanted = np.unique(candidates[candidates >= 0])
    found, vectors = vectors_of(wanted)
    row_of = {int(image_id): row for row, image_id in enumerate(np.asarray(found).tolist())}
    distances = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for number, (query, row_ids) in enumerate(zip(queries, candidates, strict=True)):
        known = np.array([i for i in row_ids.tolist() if i in row_of], dtype=np.int64)
        if not len(known):
            continue
        scores = vectors[[row_of[int(i)] for i in known]] @ query
        order = np.argsort(-scores, kind="stable")[:k]
        distances[number, : len(order)], ids[number, : len(order)] = scores[order], known[order]
    return distances, ids


def rescore_range(
    queries: np.ndarray, lims: np.ndarray, found: np.ndarray, vectors_of: VectorSource, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A range search's candidates (faiss's lims, ids, grouped by query) re-scored exactly: (lims, D, I) of
    those whose stored vector scores at least `radius`."""
    known_ids, vectors = vectors_of(np.unique(found))
    row_of = {int(image_id): row for row, image_id in enumerate(np.asarray(known_ids).tolist())}
    query_of = np.repeat(np.arange(len(queries)), np.diff(lims))
    known = np.fromiter((int(i) in row_of for i in found.tolist()), dtype=bool, count=len(found))
    rows = np.fromiter((row_of[int(i)] for i in found[known].tolist()), dtype=np.int64, count=int(known.sum()))
    scores = np.einsum("ij,ij->i", queries[query_of[known]], vectors[rows]).astype(np.float32)
    keep = scores >= radius
    counts = np.bincount(query_of[known][keep], minlength=len(queries))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), scores[keep], found[known][keep]


def rerank_depth(k: int, factor: int, bound: int) -> int:
    """Candidates to fetch for `k` results: `factor` * k, at most what can match."""
    return max(1, min(bound, factor * k))


def memmap_source(vectors: Path, ids: Path | None = None) -> VectorSource:
    """A VectorSource over a float16 .npy file whose row i has id i (or ids[i]: then sorted ids)."""
    matrix = np.load(vectors, mmap_mode="r")
    known = None if ids is None else np.load(ids, mmap_mode="r")

    def vectors_of(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.asarray(wanted, dtype=np.int64)
        if known is None:
            hits = wanted[(wanted >= 0) & (wanted < len(matrix))]
            rows = hits
        else:
            rows = np.searchsorted(known, wanted).clip(0, max(0, len(known) - 1))
            keep = known[rows] == wanted if len(known) else np.zeros(len(wanted), dtype=bool)
            hits, rows = wanted[keep], rows[keep]
        order = np.argsort(rows)  # read the file in order
        return hits[order], np.asarray(matrix[rows[order]], dtype=np.float32)

    return vectors_of


def cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
