"""Tests of retrieval.quality.recall: recall@k (CLIP_benchmark's definitions) and rank, against a brute-force reference.

The reference below is written independently in plain Python loops. Vectors are put on a dyadic grid
(multiples of 2**-bits, few dimensions) so that every dot product is exact in float32 and float64 alike:
BLAS summation order cannot then flip a near-tie, and exact ties are real ties on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import retrieval.quality.recall as recall_module
from retrieval.quality.recall import Recall, rank, recall_at_k

# --- the independent reference ---------------------------------------------------------------------


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def _position(scores: list[float], target: int) -> int:
    """0-based rank of `target`: items scoring strictly higher, plus equal-scoring items with a lower index."""
    mine = scores[target]
    return sum(1 for index, score in enumerate(scores) if score > mine or (score == mine and index < target))


def _reference(
    images: np.ndarray, texts: np.ndarray, owners: Sequence[int], ks: Sequence[int]
) -> tuple[dict[int, float], dict[int, float]]:
    """(text->image, image->text) recall@k in percent, by brute force."""
    caption_ranks = []
    for j, text in enumerate(texts):
        scores = [_dot(image, text) for image in images]
        caption_ranks.append(_position(scores, owners[j]))
    image_best = []
    for i, image in enumerate(images):
        scores = [_dot(image, text) for text in texts]
        own = [_position(scores, j) for j in range(len(texts)) if owners[j] == i]
        image_best.append(min(own) if own else None)
    text_to_image = {k: 100.0 * sum(r < k for r in caption_ranks) / len(caption_ranks) for k in ks}
    image_to_text = {k: 100.0 * sum(r is not None and r < k for r in image_best) / len(image_best) for k in ks}
    return text_to_image, image_to_text


def _reference_rank(queries: np.ndarray, gallery: np.ndarray, k: int) -> list[list[int]]:
    result = []
    for query in queries:
        scores = [_dot(query, item) for item in gallery]
        result.append(sorted(range(len(gallery)), key=lambda index: (-scores[index], index))[:k])
    return result


def _grid(rng: np.random.Generator, count: int, dim: int, bits: int) -> np.ndarray:
    """Roughly unit vectors rounded to multiples of 2**-bits, as float32 (dot products stay exact)."""
    vectors = rng.standard_normal((count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return (np.round(vectors * 2**bits) / 2**bits).astype(np.float32)


def _dataset(
    seed: int, n_images: int, dim: int, bits: int, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Images and 1..5 captions each (captions near their image, in shuffled order), all on the grid."""
    rng = np.random.default_rng(seed)
    images = _grid(rng, n_images, dim, bits)
    owners = [i for i in range(n_images) for _ in range(int(rng.integers(1, 6)))]
    rng.shuffle(owners)
    raw = images[owners].astype(np.float64) + noise * rng.standard_normal((len(owners), dim))
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    texts = (np.round(raw * 2**bits) / 2**bits).astype(np.float32)
    return images, texts, owners


def _assert_matches(result: Recall, expected: tuple[dict[int, float], dict[int, float]]) -> None:
    assert list(result.text_to_image) == list(expected[0])
    assert list(result.image_to_text) == list(expected[1])
    for k, value in expected[0].items():
        assert result.text_to_image[k] == pytest.approx(value, abs=1e-9), f"text->image R@{k}"
    for k, value in expected[1].items():
        assert result.image_to_text[k] == pytest.approx(value, abs=1e-9), f"image->text R@{k}"


# --- a case computed by hand -----------------------------------------------------------------------

# Scores S[i][j] = image_i . caption_j:      C0  C1  C2  C3      owners: C0->I0, C1->I1, C2->I2, C3->I1
#                                       I0:   1   0   1   1
#                                       I1:   0   1   0   1
#                                       I2:   1   1   1   2
HAND_IMAGES = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
HAND_TEXTS = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
HAND_OWNERS = [0, 1, 2, 1]


def test_hand_computed_tiny_case() -> None:
    """Worked by hand from the score table above, ties going to the lower index.

    text->image ranks of the right image: C0 0, C1 0 (I2 ties but comes later), C2 1 (I0 ties first),
    C3 2 (I2 higher, I0 ties first) -> R@1 2/4, R@2 3/4, R@3 and R@4 (k > 3 images) 4/4.
    image->text best rank of an own caption: I0 0 (C0), I1 0 (C1), I2 3 (C3 higher, C0 and C1 tie first)
    -> R@1..3 2/3, R@4 3/3.
    """
    result = recall_at_k(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, ks=(1, 2, 3, 4))
    assert result.text_to_image == {1: 50.0, 2: 75.0, 3: 100.0, 4: 100.0}
    assert result.image_to_text == pytest.approx({1: 200 / 3, 2: 200 / 3, 3: 200 / 3, 4: 100.0})
    assert result.mean == pytest.approx(625 / 8)  # (50 + 75 + 100 + 100 + 3 * 200/3 + 100) / 8
    _assert_matches(result, _reference(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, (1, 2, 3, 4)))


def test_hand_computed_rank_orders() -> None:
    """rank() lists best first with ties to the lower index, and never more than the gallery holds."""
    assert rank(HAND_TEXTS, HAND_IMAGES, 3).tolist() == [[0, 2, 1], [1, 2, 0], [0, 2, 1], [2, 0, 1]]
    assert rank(HAND_IMAGES, HAND_TEXTS, 4).tolist() == [[0, 2, 3, 1], [1, 3, 0, 2], [3, 0, 1, 2]]
    assert rank(HAND_IMAGES, HAND_TEXTS, 2).tolist() == [[0, 2], [1, 3], [3, 0]]
    assert rank(HAND_TEXTS, HAND_IMAGES, 100).shape == (4, 3)


def test_to_json_keys_and_values() -> None:
    """to_json names both directions and keys each value "R@k", in the order of ks."""
    result = recall_at_k(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, ks=(2, 1))
    assert result.to_json() == {
        "text_to_image": {"R@2": 75.0, "R@1": 50.0},
        "image_to_text": {"R@2": pytest.approx(200 / 3), "R@1": pytest.approx(200 / 3)},
    }
    assert list(result.to_json()["text_to_image"]) == ["R@2", "R@1"]


def test_mean_is_the_mean_of_every_value_and_zero_when_empty() -> None:
    """Recall.mean averages both directions' values together; an empty Recall has mean 0."""
    assert Recall({1: 10.0, 5: 30.0}, {1: 20.0, 5: 60.0}).mean == pytest.approx(30.0)
    assert Recall({1: 100.0}, {1: 0.0, 5: 50.0}).mean == pytest.approx(50.0)
    assert Recall({}, {}).mean == 0.0


# --- random data against the reference -----------------------------------------------------------


@pytest.mark.parametrize(("seed", "bits"), [(0, 8), (1, 8), (2, 2), (3, 1)])
def test_random_data_matches_brute_force(seed: int, bits: int) -> None:
    """Several captions per image (1..5, shuffled), fine grids (few ties) and coarse ones (many exact ties),
    and k beyond the number of images: every value equals the brute-force reference."""
    images, texts, owners = _dataset(seed, n_images=30, dim=12, bits=bits)
    ks = (1, 2, 5, 10, 31, 500)
    result = recall_at_k(images, texts, owners, ks)
    expected = _reference(images, texts, owners, ks)
    _assert_matches(result, expected)
    assert result.text_to_image[31] == 100.0  # k > 30 images: every caption finds its image
    assert result.image_to_text[500] == 100.0  # k > every caption: every image finds one of its own
    assert 0.0 < result.text_to_image[1] < 100.0  # the data is neither trivial nor hopeless


@pytest.mark.parametrize("seed", [0, 3])
def test_rank_matches_brute_force(seed: int) -> None:
    """rank() equals a full sort by (-score, index), both ways round, for k below, at and above the gallery."""
    images, texts, _ = _dataset(seed, n_images=25, dim=6, bits=2)
    for k in (1, 4, 25, 40):
        assert rank(texts, images, k).tolist() == _reference_rank(texts, images, k)
        assert rank(images, texts, k).tolist() == _reference_rank(images, texts, k)


def test_duplicate_image_vectors_rank_the_lower_index_first() -> None:
    """Two identical images: the earlier one always wins the tie, so the later one's caption misses at k=1."""
    rng = np.random.default_rng(7)
    images = _grid(rng, 6, 8, 8)
    images[4] = images[1]
    texts = images[[0, 1, 2, 3, 4, 5, 4]].copy()  # each caption is exactly its image's vector
    owners = [0, 1, 2, 3, 4, 5, 4]
    result = recall_at_k(images, texts, owners, ks=(1, 2))
    _assert_matches(result, _reference(images, texts, owners, (1, 2)))
    assert result.text_to_image == pytest.approx({1: 500 / 7, 2: 100.0})  # both captions of image 4 miss at 1
    ranked = rank(texts, images, 2)
    assert ranked[1].tolist() == [1, 4]
    assert ranked[4].tolist() == [1, 4]


def test_duplicate_caption_vectors_rank_the_lower_index_first() -> None:
    """Two identical captions owned by different images: the image owning the later one misses at k=1."""
    images = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    texts = np.array([[0, 0, 1], [1, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0]], dtype=np.float32)
    owners = [2, 0, 0, 1]  # caption 3 (image 1) duplicates caption 2 (image 0)
    result = recall_at_k(images, texts, owners, ks=(1, 2, 3))
    _assert_matches(result, _reference(images, texts, owners, (1, 2, 3)))
    # Image 1 scores 0.5 on captions 2 and 3 and 0 elsewhere: caption 2 comes first, so its own is second.
    assert rank(images[1:2], texts, 4).tolist() == [[2, 3, 0, 1]]
    assert result.image_to_text == pytest.approx({1: 200 / 3, 2: 100.0, 3: 100.0})
    # Caption 3 ties images 0 and 1 at 0.5: image 0 comes first, so caption 3 misses at k=1.
    assert result.text_to_image == pytest.approx({1: 75.0, 2: 100.0, 3: 100.0})


def test_all_scores_tied_everything_goes_to_the_lowest_indices() -> None:
    """With every score equal, the top k are simply indices 0..k-1 in both directions."""
    images = np.ones((5, 4), dtype=np.float32)
    texts = np.ones((8, 4), dtype=np.float32)
    owners = [0, 1, 2, 3, 4, 0, 1, 2]
    assert rank(texts, images, 3).tolist() == [[0, 1, 2]] * 8
    assert rank(images, texts, 3).tolist() == [[0, 1, 2]] * 5
    result = recall_at_k(images, texts, owners, ks=(1, 3, 5))
    _assert_matches(result, _reference(images, texts, owners, (1, 3, 5)))
    # text->image: a caption hits at k iff its owner < k; image->text: image i's first caption sits at index i.
    assert result.text_to_image == pytest.approx({1: 200 / 8, 3: 600 / 8, 5: 100.0})
    assert result.image_to_text == pytest.approx({1: 20.0, 3: 60.0, 5: 100.0})


def test_an_image_without_captions_counts_as_a_miss() -> None:
    """An image no caption belongs to can never hit in image->text; it still counts in the mean."""
    images = np.array([[1, 0], [0, 1]], dtype=np.float32)
    texts = np.array([[1, 0]], dtype=np.float32)
    result = recall_at_k(images, texts, [0], ks=(1, 5))
    assert result.image_to_text == {1: 50.0, 5: 50.0}
    assert result.text_to_image == {1: 100.0, 5: 100.0}
    _assert_matches(result, _reference(images, texts, [0], (1, 5)))


def test_owner_count_must_match_caption_count() -> None:
    """A caption_image list of the wrong length is refused, naming both counts."""
    with pytest.raises(ValueError, match="4 caption vectors but 3 caption owners"):
        recall_at_k(HAND_IMAGES, HAND_TEXTS, [0, 1, 2])


def test_rank_of_no_queries_is_an_empty_array() -> None:
    """No queries give a (0, k) array rather than an error."""
    assert rank(np.zeros((0, 2), dtype=np.float32), HAND_IMAGES, 2).shape == (0, 2)


# --- chunking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cells", [1, 125, 1000])
def test_chunked_scoring_gives_identical_results(monkeypatch: pytest.MonkeyPatch, cells: int) -> None:
    """With the score matrix cut into tiny chunks (one query per chunk, or uneven chunks with a remainder),
    rank() and recall_at_k() return exactly what they return unchunked, which is the reference."""
    images, texts, owners = _dataset(5, n_images=30, dim=10, bits=2)
    ks = (1, 5, 10)
    whole = recall_at_k(images, texts, owners, ks)
    whole_t2i, whole_i2t = rank(texts, images, 10), rank(images, texts, 10)
    monkeypatch.setattr(recall_module, "_CHUNK_CELLS", cells)
    chunked = recall_at_k(images, texts, owners, ks)
    assert chunked == whole
    assert np.array_equal(rank(texts, images, 10), whole_t2i)
    assert np.array_equal(rank(images, texts, 10), whole_i2t)
    _assert_matches(chunked, _reference(images, texts, owners, ks))
