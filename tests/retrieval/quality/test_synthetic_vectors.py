"""The synthetic CLIP-like vectors have the properties the ANN measurements rely on, cheaply checked."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.quality.synthetic_vectors import ClipLikeSpace


@pytest.fixture(scope="module")
def space() -> ClipLikeSpace:
    return ClipLikeSpace(clusters=256, chunk=1000, seed=3)


@pytest.fixture(scope="module")
def database(space: ClipLikeSpace) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(space.images(4500))
    return np.concatenate([v for v, _ in chunks]), np.concatenate([c for _, c in chunks])


def test_shapes_norms_and_chunks(space: ClipLikeSpace, database: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, labels = database
    assert vectors.shape == (4500, 512) and vectors.dtype == np.float32
    assert [len(v) for v, _ in space.images(4500)] == [1000, 1000, 1000, 1000, 500]
    assert labels.min() >= 0 and labels.max() < 256
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts, about = space.text_queries(50)
    images, positions = space.image_queries(50, 4500)
    assert texts.shape == images.shape == (50, 512) and about.shape == positions.shape == (50,)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert positions.max() < 4500


def test_deterministic_by_seed_and_chunk(space: ClipLikeSpace, database: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = database
    again = ClipLikeSpace(clusters=256, chunk=1000, seed=3)
    np.testing.assert_array_equal(again.image_vectors(4500), vectors)
    np.testing.assert_array_equal(again.image_chunk(2)[0], vectors[2000:3000])  # a chunk regenerates alone
    np.testing.assert_array_equal(again.text_queries(20)[0], space.text_queries(20)[0])
    other = ClipLikeSpace(clusters=256, chunk=1000, seed=4)
    assert not np.allclose(other.image_chunk(0)[0], vectors[:1000])
    assert not np.allclose(space.text_queries(20, seed=1)[0], space.text_queries(20)[0])


def test_cluster_sizes_are_very_uneven(database: tuple[np.ndarray, np.ndarray]) -> None:
    sizes = np.sort(np.bincount(database[1], minlength=256))[::-1]
    assert sizes[0] > 20 * np.median(sizes)  # Zipf: the biggest concept dwarfs the typical one


def test_modality_gap_like_clip(space: ClipLikeSpace, database: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, labels = database
    texts, about = space.text_queries(200)
    present = np.isin(about, labels)  # the smallest concepts may have no image among 4500
    matched = np.array([np.mean(vectors[labels == c] @ t) for t, c in zip(texts[present], about[present], strict=True)])
    assert len(matched) > 150
    assert 0.2 <= np.mean(matched) <= 0.35  # CLIP's text-image cosines for a match, not 0.9
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(vectors), (2, 2000))
    image_image = np.mean(np.sum(vectors[a] * vectors[b], axis=1))
    text_image = np.mean(texts @ vectors[a[:200]].T)
    assert text_image < np.mean(matched) - 0.1 and image_image > np.mean(matched)  # two cones, far apart
    centre_image, centre_text = vectors.mean(axis=0), texts.mean(axis=0)
    gap = centre_image @ centre_text / np.linalg.norm(centre_image) / np.linalg.norm(centre_text)
    assert gap < 0.5
    nearest_text = np.max(texts @ vectors.T, axis=1)
    assert np.max(nearest_text) < 0.6  # a text query sits near no database point


def test_image_queries_sit_next_to_their_source(space: ClipLikeSpace, database: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = database
    queries, positions = space.image_queries(100, 4500, seed=2)
    scores = queries @ vectors.T
    assert np.all(np.argmax(scores, axis=1) == positions)
    assert np.all(scores[np.arange(100), positions] > 0.9)


def test_fill_library_inserts_each_vector_once_with_its_facts_and_resumes(library, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from retrieval.quality.synthetic_vectors import fill_library
    from retrieval.storage.records import FileMetadata

    space = ClipLikeSpace(dim=tiny_encoder.dim, clusters=16, chunk=100, seed=5)

    def meta(position: int) -> FileMetadata:
        return FileMetadata(f"/synthetic/{position:04d}.jpg", 1000 + position, position, f"{position:064x}")

    seen: list[int] = []
    assert fill_library(library, tiny_encoder, space, 250, meta, seen.append) is not None
    assert seen == [100, 200, 250] and library.store.count_vectors() == 250
    assert fill_library(library, tiny_encoder, space, 250, meta) is None  # nothing left: nothing written
    assert fill_library(library, tiny_encoder, space, 320, meta) is not None  # resumes after what is there
    assert library.store.count_vectors() == 320
    row = library.store.image_by_path("/synthetic/0317.jpg")
    assert row is not None and row.size == 1317
    stored = library.load_index(gpu="never").reconstruct([row.id])[0]
    expected = space.image_chunk(3, 20)[0][17]
    assert float(stored @ expected) > 0.999  # float16 storage of the 318th vector
