"""How vectors are kept in the store: float16 blobs, half the bytes of float32, given back as float32.

A unit vector's components lose at most 2**-11 of their value in float16 (cosine to the original above
0.99999 for CLIP-sized vectors), far below what separates search results; the FAISS index is built from
the stored values, so the index and the store always agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STORED_DTYPE = np.dtype("<f2")
"""Little-endian float16, whatever the machine: a library file moves between machines."""


def to_blob(vector: np.ndarray) -> bytes:
    """One vector as the store keeps it."""
    return np.ascontiguousarray(vector, dtype=np.float32).astype(STORED_DTYPE).tobytes()


def from_blobs(blobs: Sequence[bytes | None], dim: int) -> np.ndarray:
    """(len(blobs), dim) float32 rows from stored blobs, in order (a missing one fails the reshape)."""
    joined = b"".join(bytes(blob or b"") for blob in blobs)
    return np.frombuffer(joined, dtype=STORED_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def from_blob(blob: bytes) -> np.ndarray:
    """One stored blob as a float32 vector."""
    return np.frombuffer(bytes(blob), dtype=STORED_DTYPE).astype(np.float32)


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """`vectors` (float32) as the store gives them back: what an index built beside the store must hold."""
    return np.asarray(vectors, dtype=np.float32).astype(STORED_DTYPE).astype(np.float32)
