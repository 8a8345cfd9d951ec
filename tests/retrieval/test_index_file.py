"""Tests of retrieval.index_file: the fingerprint trailer travels with the faiss bytes, faiss still reads
the file, and any change to the bytes it covers is caught (all of them, or sampled blocks for big files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import retrieval.index_file as index_file
from retrieval.index import VectorIndex
from retrieval.index_file import IndexFileProblem, Stamp, ids_digest, read_fingerprint
from tests.libcheck import unit_vectors

DIM = 16


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = VectorIndex(DIM, gpu="never")
    index.add(np.arange(300) * 2, unit_vectors(300, 1, DIM))
    path = tmp_path / "index-4.faiss"
    index.save(path, Stamp("lib", 4))
    return path


def test_fingerprint_round_trip_and_faiss_reads_the_file(saved: Path) -> None:
    """The trailer says who, which generation, what is inside; faiss reads the index in front of it."""
    fingerprint = read_fingerprint(saved)
    assert (fingerprint.library_id, fingerprint.generation, fingerprint.dim, fingerprint.count) == ("lib", 4, DIM, 300)
    assert fingerprint.kind == "flat" and fingerprint.ids_digest == ids_digest(np.arange(300)[::-1] * 2)
    loaded = VectorIndex.load(saved, gpu="never", mmap=True)
    assert len(loaded) == 300 and ids_digest(loaded.ids()) == fingerprint.ids_digest


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("sampled", [False, True])
def test_a_changed_byte_is_caught(saved: Path, monkeypatch: pytest.MonkeyPatch, sampled: bool) -> None:
    """One bit flipped in the vectors is caught by the full digest; with sampled blocks, a flip inside a
    sampled block (the first and last blocks are always sampled) is caught too."""
    if sampled:
        monkeypatch.setattr(index_file, "INDEX_DIGEST_FULL_MAX_BYTES", 1024)
        monkeypatch.setattr(index_file, "INDEX_DIGEST_BLOCKS", 4)
        monkeypatch.setattr(index_file, "INDEX_DIGEST_BLOCK_BYTES", 256)
        saved.unlink()
        index = VectorIndex(DIM, gpu="never")
        index.add(np.arange(300) * 2, unit_vectors(300, 1, DIM))
        index.save(saved, Stamp("lib", 4))
    read_fingerprint(saved)
    _flip(saved, 100 if sampled else read_fingerprint(saved).content_size // 2)
    with pytest.raises(IndexFileProblem, match="garbled"):
        read_fingerprint(saved)


def test_a_file_without_a_trailer_is_refused(saved: Path, tmp_path: Path) -> None:
    """A plain faiss file (older clipsearch, or copied in) has no fingerprint: refused, not trusted."""
    import faiss

    plain = tmp_path / "plain.faiss"
    faiss.write_index(faiss.IndexFlatIP(DIM), str(plain))
    with pytest.raises(IndexFileProblem, match="no fingerprint"):
        read_fingerprint(plain)
    with pytest.raises(IndexFileProblem, match="cannot be read"):
        read_fingerprint(tmp_path / "missing.faiss")
