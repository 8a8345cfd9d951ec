"""What tests read from a library and check it against: random unit vectors to store, the store's rows and
vectors read straight from SQLite, the encoder's own vectors as the exact reference, and the check that
the FAISS index holds exactly the store's vectors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from retrieval.decode import read_and_decode
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.quality.attributes import constraints_of, satisfies
from retrieval.storage.schema import ImageRow
from retrieval.storage.store import Store
from retrieval.storage.vectors import from_blob

STORED_ATOL = 2**-11
"""How far a stored vector's components may be from the encoder's: the store keeps float16, 11 significant
bits, so at most 2**-12 off for components below 1, plus the encoder's batch-to-batch noise."""


def unit_vectors(rows: int, seed: int, dim: int) -> np.ndarray:
    """`rows` random float32 unit vectors of dimension `dim`, the same for the same seed."""
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def store_vectors(store: Store, dim: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(generation, ids, vectors) of the store, read through one `vector_snapshot`."""
    with store.vector_snapshot(dim) as (generation, batches):
        parts = [(ids, vectors.copy()) for ids, vectors in batches]
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    vectors = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, dim), dtype=np.float32)
    return generation, ids, vectors


def stored_rows(library: Library) -> dict[str, dict[str, Any]]:
    """Every image row, by path, read straight from the store's table."""
    with library.store.engine.connect() as conn:
        rows = conn.execute(sa.select(ImageRow.__table__)).mappings().all()
    return {row["path"]: dict(row) for row in rows}


def stored_vectors(library: Library) -> dict[str, np.ndarray]:
    """The vector of every row that has one, by path."""
    return {path: from_blob(row["vector"]) for path, row in stored_rows(library).items() if row["vector"] is not None}


def reference_vectors(encoder: Encoder, paths: list[str]) -> np.ndarray:
    """What the encoder makes of each file decoded on its own: the exact reference for stored vectors."""
    return encoder.encode_images([read_and_decode(path)[1].image for path in paths])


def assert_same_vectors(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    """The index holds each of `ids` once, no other id, and each with exactly its vector."""
    index_ids = index.ids()
    assert len(index_ids) == len(set(index_ids.tolist())), "the FAISS index holds an id twice"
    assert set(index_ids.tolist()) == set(ids.tolist())
    if len(ids):
        np.testing.assert_array_equal(index.reconstruct(ids), vectors)


def assert_index_matches_store(library: Library, *, after_completed_run: bool = True) -> None:
    """The FAISS index agrees with the store: the same ids, each with the stored vector; no path twice.

    After a completed run the file saved for the current generation must exist and be correct by itself
    (checked before `load_index` could rebuild it); in any case `load_index` must give a correct index.
    """
    with library.store.engine.connect() as conn:
        duplicated = conn.execute(
            sa.select(ImageRow.path).group_by(ImageRow.path).having(sa.func.count(ImageRow.id) > 1)
        ).all()
    assert duplicated == []
    generation, ids, vectors = store_vectors(library.store, library.dim() or 1)
    assert len(ids) == library.store.count_vectors()
    saved_path = library.index_path(generation)
    if after_completed_run:
        assert saved_path.exists(), f"no index file saved for generation {generation}"
        assert_same_vectors(VectorIndex.load(saved_path, gpu="never"), ids, vectors)
    assert_same_vectors(library.load_index(gpu="never"), ids, vectors)
    assert_same_vectors(library.rebuild_index(gpu="never"), ids, vectors)


def assert_top_shows_the_query(
    query: str, shown: Sequence[Mapping[str, Any]], scenes: Iterable[Mapping[str, Any]]
) -> None:
    """At least 4 of `shown` (the generated scenes of a text query's top 5) have everything `query` names, read
    as the attribute benchmark reads it (`constraints_of`, loose: a plural is two or three), or all the pictures
    of `scenes` (the whole set) that do, where it holds fewer than 4."""
    wants = constraints_of(query, implied_count=False)
    relevant = sum(satisfies(scene, wants) for scene in scenes)
    assert relevant >= 1, (query, wants)
    right = sum(satisfies(scene, wants) for scene in shown)
    assert right >= min(4, relevant), f"{query!r} ({relevant} in the set): top {len(shown)} are {list(shown)}"
