"""One `VectorIndex` over faiss: exact inner-product search on unit vectors, ids = the store's keys.

The CPU `IndexIDMap2(IndexFlatIP)` is the canonical copy (it saves, loads, adds, removes and
reconstructs by id). When faiss was built with GPU support and a GPU is present, searches run on a GPU
replica of the flat vectors, made lazily and dropped whenever the index changes; its row positions are
mapped back to ids through the CPU copy's id map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.atomic import atomic_path
from retrieval.config import GPU_CHOICES


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


class VectorIndex:
    def __init__(self, dim: int, *, gpu: str = "auto", index: Any = None) -> None:
        if gpu not in GPU_CHOICES:
            raise ValueError(f"gpu must be one of {GPU_CHOICES}, not {gpu!r}")
        self.dim = dim
        self._cpu = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._use_gpu = gpu == "always" or (gpu == "auto" and gpu_count() > 0)
        if gpu == "always" and gpu_count() == 0:
            raise RuntimeError("faiss has no GPU here (faiss-cpu build or no GPU); use gpu='auto' or 'never'")
        self._replica: Any = None
        self._gpu_resources: Any = None

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._use_gpu

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._cpu.id_map).astype(np.int64)

    def add(self, ids: Any, vectors: np.ndarray) -> None:
        id_array, matrix = _as_ids(ids), _as_matrix(vectors, self.dim)
        if len(id_array) != len(matrix):
            raise ValueError(f"{len(id_array)} ids for {len(matrix)} vectors")
        if len(id_array):
            self._cpu.add_with_ids(matrix, id_array)
            self._replica = None

    def remove(self, ids: Any) -> int:
        id_array = _as_ids(ids)
        if not len(id_array):
            return 0
        removed = int(self._cpu.remove_ids(faiss.IDSelectorBatch(id_array)))
        self._replica = None
        return removed

    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored vectors of `ids` (all must be present)."""
        id_array = _as_ids(ids)
        if not len(id_array):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._cpu.reconstruct_batch(id_array), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss convention: (D, I), each (n_queries, k); missing neighbours have id -1, score -inf."""
        matrix = _as_matrix(queries, self.dim)
        k = max(1, int(k))
        if self._use_gpu:
            return self._search_replica(self._gpu_replica(), matrix, k)
        distances, ids = self._cpu.search(matrix, k)
        return np.where(ids >= 0, distances, -np.inf).astype(np.float32), ids

    def _search_replica(self, replica: Any, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search a copy of the flat vectors by row position, then map positions to ids."""
        distances, positions = replica.search(matrix, min(k, max(1, len(self))))
        id_map = self.ids()
        ids = np.where(positions >= 0, id_map[np.clip(positions, 0, None)] if len(id_map) else -1, -1)
        distances = np.where(ids >= 0, distances, -np.inf).astype(np.float32)
        if ids.shape[1] < k:  # pad to k like a CPU search would
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=-np.inf)
        return distances, ids.astype(np.int64)

    def _gpu_replica(self) -> Any:
        if self._replica is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._replica = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu.index)
        return self._replica

    def search_subset(self, queries: np.ndarray, k: int, allowed: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k restricted to `allowed` ids, scoring just those vectors: fast for a small subset."""
        matrix = _as_matrix(queries, self.dim)
        allowed_ids = _as_ids(allowed)
        k = max(1, int(k))
        distances = np.full((len(matrix), k), -np.inf, dtype=np.float32)
        ids = np.full((len(matrix), k), -1, dtype=np.int64)
        if not len(allowed_ids):
            return distances, ids
        scores = matrix @ self.reconstruct(allowed_ids).T
        take = min(k, len(allowed_ids))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
        distances[:, :take] = np.take_along_axis(scores, top, axis=1)
        ids[:, :take] = allowed_ids[top]
        return distances, ids

    def save(self, path: str | Path) -> None:
        """Write atomically and privately (0600: the library's vectors are private data)."""
        with atomic_path(path, private=True) as temporary:
            faiss.write_index(self._cpu, str(temporary))

    @classmethod
    def load(cls, path: str | Path, *, gpu: str = "auto") -> VectorIndex:
        index = faiss.read_index(str(path))
        return cls(index.d, gpu=gpu, index=index)
