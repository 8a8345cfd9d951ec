"""One `VectorIndex` over faiss: inner-product search on unit vectors, ids = the store's keys.

Two kinds (retrieval/index_policy.py picks one by the library's size):
- `flat`: an exact `IndexIDMap2(IndexFlatIP)`; it saves, loads, adds, removes and reconstructs by id.
- `ivf`: an approximate `IndexIVFScalarQuantizer` (float16 codes by default, the store's own values) or
  `IndexIVFFlat` (ids native to it, a hashtable direct map for reconstruct and remove) trained once on a
  sample; adds and removes go into its lists without retraining. It visits `nprobe_for(nlist)` lists, and
  nprobe / sqrt(share kept) under a filter (capped at nlist, where the search is exhaustive, hence exact).

Searches take an optional `IdFilter`, applied inside faiss as an IDSelector. Every search is sized by what
can match (the index's count, the filter's ids), never by `k` alone. When faiss was built with GPU
support and a GPU is present, unfiltered searches run on a GPU replica, made lazily and dropped whenever
the index changes; a flat replica's row positions are mapped back to ids through the CPU copy's id map.
A memory-mapped index (`load(..., mmap=True)`) is read-only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.config import GPU_CHOICES, IVF_CODE_CHOICES, IVF_CODES, IVF_NPROBE_PER_SQRT_NLIST
from retrieval.filters import IdFilter
from retrieval.index_file import Fingerprint, Stamp, ids_digest, write_index_file

_faiss: Any = faiss  # faiss's type stubs lag its SWIG API (selectors, search parameters, direct maps, IO)


FLAT, IVF = "flat", "ivf"
_MMAP_IVF = _faiss.IO_FLAG_MMAP | _faiss.IO_FLAG_READ_ONLY
"""Maps an IVF index's inverted lists. A flat index needs the other flag (vectors mapped zero-copy), which
IVF lists cannot be read with: the file's fourcc (faiss IVF ones start with `Iw`) picks one."""
_MMAP_FLAT = _faiss.IO_FLAG_MMAP_IFC | _faiss.IO_FLAG_READ_ONLY


_SQ_TYPES = {"SQfp16": "QT_fp16", "SQ8": "QT_8bit"}


def nprobe_for(nlist: int) -> int:
    """Lists an unfiltered IVF search visits: IVF_NPROBE_PER_SQRT_NLIST * sqrt(nlist), rounded up to a power
    of two (45 -> 64 at 512 lists, where 45 measured 0.968; docs/ann.md), at most nlist."""
    wanted = IVF_NPROBE_PER_SQRT_NLIST * math.sqrt(max(1, nlist))
    return max(1, min(nlist, 1 << math.ceil(math.log2(wanted))))


def filtered_nprobe(nprobe: int, nlist: int, kept: int, total: int) -> int:
    """Lists to visit when a filter keeps `kept` of `total` vectors: the probed lists hold that share of
    candidates, so nprobe / sqrt(share), capped at nlist (measured to keep recall@10 >= 0.97, docs/ann.md)."""
    if kept >= total:
        return nprobe
    return min(nlist, math.ceil(nprobe / math.sqrt(max(1, kept) / max(1, total))))


def gpu_count() -> int:
    """GPUs faiss can use: 0 for faiss-cpu builds, which lack the GPU API altogether."""
    counter = getattr(faiss, "get_num_gpus", None)
    return int(counter()) if counter is not None else 0


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    if matrix.shape[1] != dim:
        raise ValueError(f"vectors have dimension {matrix.shape[1]}, the index has {dim}")
    return matrix


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _no_result(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, k), -np.inf, dtype=np.float32), np.full((rows, k), -1, dtype=np.int64)


def _no_prefetch(index: Any) -> None:
    """Memory-mapped IVF lists come back as `OnDiskInvertedLists`, which by default start 32 threads per
    search to prefetch the probed lists' pages: for lists already in the page cache that made a query 2.6x
    slower (5.7 ms against 2.2 at 1M, nprobe 128) and an exhaustive filtered one 7x (70 ms against 10)."""
    lists = _faiss.downcast_InvertedLists(index.invlists)
    if hasattr(lists, "prefetch_nthread"):
        lists.prefetch_nthread = 0


class VectorIndex:
    def __init__(
        self, dim: int, *, gpu: str = "auto", index: Any = None, trained_on: int = 0, read_only: bool = False
    ) -> None:
        if gpu not in GPU_CHOICES:
            raise ValueError(f"gpu must be one of {GPU_CHOICES}, not {gpu!r}")
        self.dim = dim
        self._cpu = index if index is not None else _faiss.IndexIDMap2(_faiss.IndexFlatIP(dim))
        self._ivf = self._cpu if isinstance(self._cpu, _faiss.IndexIVF) else None
        if self._ivf is not None:
            self._ivf.nprobe = nprobe_for(self._ivf.nlist)
        self.trained_on = trained_on
        """The library's size when an IVF index was trained (0 for flat): the retraining policy reads it."""
        self.read_only = read_only
        self._use_gpu = gpu == "always" or (gpu == "auto" and gpu_count() > 0)
        if gpu == "always" and gpu_count() == 0:
            raise RuntimeError("faiss has no GPU here (faiss-cpu build or no GPU); use gpu='auto' or 'never'")
        self._replica: Any = None
        self._gpu_resources: Any = None

    @classmethod
    def ivf(
        cls,
        dim: int,
        nlist: int,
        training: np.ndarray,
        *,
        codes: str = IVF_CODES,
        trained_on: int | None = None,
        gpu: str = "auto",
    ) -> VectorIndex:
        """An empty IVF index with `nlist` lists keeping its vectors as `codes` (IVF_CODE_CHOICES), trained
        (k-means) on `training`, a sample of a library of `trained_on` vectors (default: the sample's size)."""
        if codes not in IVF_CODE_CHOICES:
            raise ValueError(f"`codes` must be one of {IVF_CODE_CHOICES}, not {codes!r}")
        matrix = _as_matrix(training, dim)
        quantizer = _faiss.IndexFlatIP(dim)
        if codes == "Flat":
            index = _faiss.IndexIVFFlat(quantizer, dim, nlist, _faiss.METRIC_INNER_PRODUCT)
        else:
            qtype = getattr(_faiss.ScalarQuantizer, _SQ_TYPES[codes])
            index = _faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, _faiss.METRIC_INNER_PRODUCT)
            index.by_residual = codes != "SQfp16"  # float16 of the vector itself: the store's values, exactly
        index.train(matrix)
        index.set_direct_map_type(_faiss.DirectMap.Hashtable)
        return cls(dim, gpu=gpu, index=index, trained_on=trained_on or len(matrix))

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def kind(self) -> str:
        return IVF if self._ivf is not None else FLAT

    @property
    def nprobe(self) -> int:
        """Lists an unfiltered search visits (IVF; 0 for flat). Settable, to trade recall for time."""
        return int(self._ivf.nprobe) if self._ivf is not None else 0

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is None:
            raise ValueError("only an IVF index has an `nprobe`")
        self._ivf.nprobe = max(1, min(int(value), self._ivf.nlist))

    @property
    def on_gpu(self) -> bool:
        return self._use_gpu

    def ids(self) -> np.ndarray:
        if self._ivf is None:
            return _faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
        lists = self._ivf.invlists
        parts = [np.zeros(0, dtype=np.int64)]
        for number in range(lists.nlist):
            size = lists.list_size(number)
            if size:
                pointer = lists.get_ids(number)
                parts.append(_faiss.rev_swig_ptr(pointer, size).astype(np.int64))
                lists.release_ids(number, pointer)
        return np.concatenate(parts)

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError("this index is memory-mapped and read-only; load it with mmap=False to change it")
        self._replica = None

    def add(self, ids: Any, vectors: np.ndarray) -> None:
        id_array, matrix = _as_ids(ids), _as_matrix(vectors, self.dim)
        if len(id_array) != len(matrix):
            raise ValueError(f"{len(id_array)} ids for {len(matrix)} vectors")
        if len(id_array):
            self._writable()
            self._cpu.add_with_ids(matrix, id_array)

    def remove(self, ids: Any) -> int:
        id_array = _as_ids(ids)
        if not len(id_array):
            return 0
        self._writable()
        selector = _faiss.IDSelectorArray(id_array) if self._ivf is not None else _faiss.IDSelectorBatch(id_array)
        return int(self._cpu.remove_ids(selector))

    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored vectors of `ids` (all must be present)."""
        id_array = _as_ids(ids)
        if not len(id_array):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._cpu.reconstruct_batch(id_array), dtype=np.float32)

    def contains(self, image_id: int) -> bool:
        try:
            self._cpu.reconstruct(int(image_id))
        except RuntimeError:
            return False
        return True

    def search(self, queries: np.ndarray, k: int, id_filter: IdFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """faiss convention: (D, I), each (n_queries, min(k, what can match)); a missing neighbour (a
        filter that keeps fewer ids than it names) has id -1 and score -inf."""
        matrix = _as_matrix(queries, self.dim)
        id_filter = id_filter or IdFilter()
        k = min(max(1, int(k)), id_filter.bound(len(self)))
        if k == 0:
            return _no_result(len(matrix), 0)
        selector = id_filter.selector()
        if self._use_gpu and selector is None:
            return self._search_replica(self._gpu_replica(), matrix, k)
        if self._ivf is not None:
            return self._search_ivf(matrix, k, selector.sel if selector else None, id_filter.bound(len(self)))
        params = _faiss.SearchParameters(sel=selector.sel) if selector else None
        distances, ids = self._cpu.search(matrix, k, params=params)
        return np.where(ids >= 0, distances, -np.inf).astype(np.float32), ids

    def _search_ivf(self, matrix: np.ndarray, k: int, sel: Any, bound: int) -> tuple[np.ndarray, np.ndarray]:
        """Visit enough lists to expect k matches (all of them for a selective filter); visit more while a
        query comes back short and lists remain, so k results come back whenever k exist."""
        assert self._ivf is not None
        nlist = self._ivf.nlist
        nprobe = filtered_nprobe(self._ivf.nprobe, nlist, bound, len(self))
        while True:
            params = (
                _faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if sel else _faiss.SearchParametersIVF(nprobe=nprobe)
            )
            distances, ids = self._ivf.search(matrix, k, params=params)
            if nprobe >= nlist or (ids >= 0).all():
                return np.where(ids >= 0, distances, -np.inf).astype(np.float32), ids
            nprobe = min(nlist, nprobe * 4)

    def range_search(
        self, queries: np.ndarray, radius: float, id_filter: IdFilter | None = None, *, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss convention: (lims, D, I), query q's neighbours scoring above `radius` being D[lims[q]:lims[q+1]]
        and I[...] (in no order). On the CPU copy (faiss GPU indexes have no range search); an IVF index visits
        `nprobe` lists (default: its own), whatever the filter."""
        matrix = _as_matrix(queries, self.dim)
        if len(self) == 0:
            return _as_ids(np.zeros(len(matrix) + 1)), np.zeros(0, dtype=np.float32), _as_ids([])
        selector = (id_filter or IdFilter()).selector()
        extra = {"sel": selector.sel} if selector else {}
        if self._ivf is not None:
            probes = self._ivf.nprobe if nprobe is None else max(1, min(int(nprobe), self._ivf.nlist))
            params = _faiss.SearchParametersIVF(nprobe=probes, **extra)
        else:
            params = _faiss.SearchParameters(**extra) if extra else None
        lims, distances, found = self._cpu.range_search(matrix, float(radius), params=params)
        return _as_ids(lims), np.asarray(distances, dtype=np.float32), _as_ids(found)

    def _search_replica(self, replica: Any, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search the GPU copy; a flat copy answers row positions, mapped back to ids here."""
        distances, found = replica.search(matrix, k)
        if self._ivf is None:
            id_map = self.ids()
            found = np.where(found >= 0, id_map[np.clip(found, 0, None)] if len(id_map) else -1, -1)
        return np.where(found >= 0, distances, -np.inf).astype(np.float32), found.astype(np.int64)

    def _gpu_replica(self) -> Any:
        if self._replica is None:
            if self._gpu_resources is None:
                self._gpu_resources = _faiss.StandardGpuResources()
            source = self._cpu if self._ivf is not None else self._cpu.index
            self._replica = _faiss.index_cpu_to_gpu(self._gpu_resources, 0, source)
        return self._replica

    def save(self, path: str | Path, stamp: Stamp | None = None) -> Fingerprint:
        """Write atomically and privately (0600: the library's vectors are private data), with a
        fingerprint trailer (retrieval/index_file.py) carrying `stamp`. OSError when it cannot be written.
        A memory-mapped index is refused: faiss would write an IVF one as a pointer to its mapped file."""
        if self.read_only:
            raise RuntimeError("a memory-mapped index cannot be saved; load it with mmap=False to save it")
        stamp = stamp or Stamp("", -1)

        def describe(size: int, digest: str) -> Fingerprint:
            return Fingerprint(
                stamp.library_id, stamp.generation, self.dim, len(self), self.kind, self.trained_on,
                ids_digest(self.ids()), size, digest,
            )  # fmt: skip

        return write_index_file(path, self._cpu, describe)

    @classmethod
    def load(cls, path: str | Path, *, gpu: str = "auto", mmap: bool = False, trained_on: int = 0) -> VectorIndex:
        """Read a FAISS file; `mmap` maps it read-only instead of reading it whole (faiss RuntimeError
        when it is not a readable index)."""
        flags = 0
        if mmap:
            with open(path, "rb") as handle:
                flags = _MMAP_IVF if handle.read(2) == b"Iw" else _MMAP_FLAT
        index = _faiss.read_index(str(path), flags)
        if isinstance(index, _faiss.IndexIVF):
            trained_on = trained_on or int(index.ntotal)
            _no_prefetch(index)
        return cls(index.d, gpu=gpu, index=index, trained_on=trained_on, read_only=mmap)
