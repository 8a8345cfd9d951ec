"""The FAISS file on disk: faiss's own bytes, then a fingerprint trailer that says whose file it is.

faiss reads an index from the front of a file and ignores what follows, so the fingerprint rides at the
end of the same file (one atomic write, nothing to keep in step):

    <faiss index bytes> <fingerprint JSON> <JSON length: 8 bytes little-endian> <MAGIC: 8 bytes>

The fingerprint names the library (a random id kept in the store), the store generation, the index's
dimension, count, kind and ids (a digest), and a digest of the faiss bytes (all of them for a small file,
sampled blocks for a large one, so that checking never reads a big memory-mapped file whole). A file that
is empty, truncated, garbled, of another library or another generation fails `read_fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from retrieval.atomic import atomic_path
from retrieval.config import INDEX_DIGEST_BLOCK_BYTES, INDEX_DIGEST_BLOCKS, INDEX_DIGEST_FULL_MAX_BYTES
from retrieval.large_index import is_on_disk, write_streamed

_faiss: Any = faiss  # faiss's type stubs lag its SWIG API (selectors, search parameters, direct maps, IO)


MAGIC = b"CSFPRNT1"
_LENGTH = struct.Struct("<Q")
_TAIL = _LENGTH.size + len(MAGIC)
_MAX_FINGERPRINT = 1 << 16


class IndexFileProblem(ValueError):
    """Why a FAISS file cannot be used (caught by the library, which rebuilds the file)."""


@dataclass(frozen=True)
class Stamp:
    """What the library writes into each file to recognise it: its own id and the store generation."""

    library_id: str
    generation: int


@dataclass(frozen=True)
class Fingerprint:
    library_id: str
    generation: int
    dim: int
    count: int
    kind: str
    trained_on: int
    ids_digest: str
    content_size: int
    content_digest: str


def ids_digest(ids: np.ndarray) -> str:
    """A digest of a set of ids (order does not matter)."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).astype("<i8").tobytes()).hexdigest()


def content_digest(handle: IO[bytes], size: int) -> str:
    """sha256 of the first `size` bytes when they are few, else of sampled blocks spread over them (the
    first and last included) plus the size."""
    digest = hashlib.sha256(_LENGTH.pack(size))
    if size <= INDEX_DIGEST_FULL_MAX_BYTES:
        handle.seek(0)
        remaining = size
        while remaining:
            chunk = handle.read(min(remaining, 1 << 20))
            if not chunk:
                raise IndexFileProblem("is shorter than its fingerprint says")
            digest.update(chunk)
            remaining -= len(chunk)
        return digest.hexdigest()
    last = size - INDEX_DIGEST_BLOCK_BYTES
    for number in range(INDEX_DIGEST_BLOCKS):
        handle.seek(last * number // (INDEX_DIGEST_BLOCKS - 1))
        digest.update(handle.read(INDEX_DIGEST_BLOCK_BYTES))
    return digest.hexdigest()


class _Writer:
    """faiss writes through this callable, so a failed write raises the OS's own error (ENOSPC, EFBIG...)
    rather than faiss's RuntimeError."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def __call__(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise


def write_index_file(path: str | Path, index: Any, describe: Callable[[int, str], Fingerprint]) -> Fingerprint:
    """Write `index` and its fingerprint atomically and privately (0600). `describe(content_size,
    content_digest)` gives the fingerprint once the faiss bytes are written. OSError on a failed write."""
    with atomic_path(path, private=True) as temporary, open(temporary, "r+b") as handle:
        writer = _Writer(handle)
        try:
            if is_on_disk(index):  # a merged large index: stream its lists into this one file
                write_streamed(index, writer)
            else:
                _faiss.write_index(index, _faiss.PyCallbackIOWriter(writer))
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        handle.flush()
        size = handle.tell()
        fingerprint = describe(size, content_digest(handle, size))
        data = json.dumps(asdict(fingerprint), sort_keys=True).encode()
        handle.seek(size)
        handle.write(data + _LENGTH.pack(len(data)) + MAGIC)
        handle.flush()
        os.fsync(handle.fileno())
    return fingerprint


def read_fingerprint(path: str | Path) -> Fingerprint:
    """The file's fingerprint, after checking that its faiss bytes are whole and unchanged;
    IndexFileProblem says what is wrong otherwise."""
    try:
        with open(path, "rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            if total < _TAIL:
                raise IndexFileProblem("is empty or truncated")
            handle.seek(total - _TAIL)
            (length,), magic = _LENGTH.unpack(handle.read(_LENGTH.size)), handle.read(len(MAGIC))
            if magic != MAGIC or not 0 < length <= min(_MAX_FINGERPRINT, total - _TAIL):
                raise IndexFileProblem("has no fingerprint (truncated, garbled, or not written by clipsearch)")
            handle.seek(total - _TAIL - length)
            fingerprint = _parse(handle.read(length))
            if fingerprint.content_size != total - _TAIL - length:
                raise IndexFileProblem("is truncated or padded")
            if content_digest(handle, fingerprint.content_size) != fingerprint.content_digest:
                raise IndexFileProblem("is garbled (its content does not match its digest)")
    except OSError as exc:
        raise IndexFileProblem(f"cannot be read ({exc.strerror or exc})") from exc
    return fingerprint


def _parse(data: bytes) -> Fingerprint:
    try:
        raw = json.loads(data)
        values = {item.name: raw[item.name] for item in fields(Fingerprint)}
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileProblem("has a garbled fingerprint") from exc
    return Fingerprint(**values)
