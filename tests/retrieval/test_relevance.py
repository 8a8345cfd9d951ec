"""Tests of retrieval.relevance and retrieval.relevance_files on real libraries and real FAISS indexes.

The math is checked on vectors of a real library (the tiny random-weight model); the cached sample and neutral
vectors in real library folders (written with the index, stale after a new generation, damaged); semantics with
the reference model on generated scenes it never saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import index_folders
from retrieval.config import DEFAULT_MIN_RELEVANCE, RELEVANCE_SAMPLE_SIZE
from retrieval.errors import InvalidQueryError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.reference import reference_spec
from retrieval.quality.attributes import AttributeQuery
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.query import Part, Query
from retrieval.relevance import Calibrator, Weights, check_min_relevance, neutral_prompts
from retrieval.relevance_files import (
    NEUTRAL_PREFIX,
    draw_sample,
    neutral_path,
    read_vectors,
    sample_path,
)
from retrieval.search import Searcher, SearchResult
from tests import imagefactory as factory


@pytest.fixture
def indexed(tmp_path: Path, tiny_encoder: Encoder) -> Iterator[tuple[Library, Path]]:
    photos = factory.photo_folder(tmp_path / "photos")
    with Library(tmp_path / "library", create=True) as library:
        index_folders(library, tiny_encoder, [str(photos)], workers=1)
        yield library, photos


# --- the calibration ------------------------------------------------------------------------------


def test_neutral_prompts_are_fixed_and_distinct() -> None:
    prompts = neutral_prompts()
    assert prompts == neutral_prompts()
    assert len(set(prompts)) == len(prompts) > 50
    assert "a photo" in prompts


def test_relevance_rises_with_the_score_and_min_score_is_its_inverse(
    indexed: tuple[Library, Path], tiny_encoder: Encoder
) -> None:
    library, _ = indexed
    searcher = Searcher(library, tiny_encoder, gpu="never")
    query = tiny_encoder.encode_texts(["a red circle"])[0]
    judge = searcher.calibrator.query(query)
    scores = np.linspace(-1, 1, 41)
    relevance = judge.relevance(scores)
    assert np.all((relevance >= 0) & (relevance <= 1)) and np.all(np.diff(relevance) >= 0)
    inside = (relevance > 1e-9) & (relevance < 1 - 1e-9)  # the logistic saturates in float64 beyond these
    assert inside.sum() >= 2 and np.all(np.diff(relevance[inside]) > 0)
    for wanted in (0.05, DEFAULT_MIN_RELEVANCE, 0.5, 0.99):
        floor = judge.min_score(wanted)
        assert judge.relevance(np.array([floor]))[0] == pytest.approx(wanted, abs=1e-9)
    assert judge.min_score(1.0) == math.inf and judge.min_score(0.0) == -math.inf
    assert searcher.calibrator.relevance(query, scores) == pytest.approx(relevance)


def test_vague_queries_get_less_relevance_for_the_same_score(indexed: tuple[Library, Path]) -> None:
    """A query on the neutral prompts' centroid is vaguer than one orthogonal to it: same score, less relevance."""
    library, _ = indexed
    calibrator = Calibrator.fit(_neutral_like(library), _library_vectors(library))
    centroid = calibrator.centroid
    orthogonal = np.roll(centroid, 1) - (np.roll(centroid, 1) @ centroid) * centroid
    orthogonal /= np.linalg.norm(orthogonal)
    assert calibrator.vagueness(centroid) > calibrator.vagueness(orthogonal)
    weights = Weights(lift=4.0, vagueness=-1.0, spread=0.0, bias=0.0)
    strict = Calibrator.fit(_neutral_like(library), _library_vectors(library), weights)
    score = np.array([0.3])
    assert strict.relevance(centroid, score)[0] < strict.relevance(orthogonal, score)[0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf, -math.inf])
def test_min_relevance_outside_zero_to_one_is_refused(bad: float) -> None:
    with pytest.raises(InvalidQueryError, match="`min_relevance`") as caught:
        check_min_relevance(bad)
    assert caught.value.parameters == ("min_relevance",)


@pytest.mark.parametrize("weights", [(0.0, 1.0, 1.0, 0.0), (-1.0, 0.0, 0.0, 0.0), (1.0, math.nan, 0.0, 0.0)])
def test_weights_must_keep_relevance_rising_with_the_score(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="positive lift"):
        Weights(*weights)


# --- the search -----------------------------------------------------------------------------------


def test_text_results_carry_relevance_and_the_cutoff_keeps_a_prefix(
    indexed: tuple[Library, Path], tiny_encoder: Encoder
) -> None:
    """The cutoff leaves out exactly the tail of the uncut ranking whose relevance is below it; a query with an
    image part carries no relevance and is not cut by it; a fused text query carries it."""
    library, photos = indexed
    searcher = Searcher(library, tiny_encoder, gpu="never")
    everything = searcher.search_text("a red circle", k=20, min_relevance=None)
    relevance = [result.relevance for result in everything]
    assert len(everything) == 13 and all(value is not None and 0 <= value <= 1 for value in relevance)
    assert relevance == sorted(relevance, reverse=True)
    middle = float(np.median(relevance))
    cut = searcher.search_text("a red circle", k=20, min_relevance=middle)
    assert cut == [result for result in everything if result.relevance >= middle]
    assert 0 < len(cut) < len(everything)
    assert searcher.search_text("a red circle", k=20, min_relevance=0) == everything
    assert searcher.search_text("a red circle", k=20, min_relevance=1) == []
    image = Query.of_image(photos / "img00.png", k=3)
    assert [result.relevance for result in searcher.search(image)] == [None, None, None]
    strict = replace(image, min_relevance=0.99)  # not calibrated for image parts: no relevance, no cut
    assert searcher.search(strict) == searcher.search(image)
    mixed = Query((Part(image=photos / "img00.png"), Part(text="red")), k=3, min_relevance=0.99)
    assert [result.relevance for result in searcher.search(mixed)] == [None, None, None]
    fused = Query((Part(text="a red circle"), Part(text="blue", weight=-1)), k=20, min_relevance=None)
    assert all(result.relevance is not None for result in searcher.search(fused))


@pytest.mark.parametrize("bad", [-0.5, 2.0, math.nan])
def test_a_query_refuses_a_bad_min_relevance(bad: float) -> None:
    with pytest.raises(InvalidQueryError, match="`min_relevance`"):
        Query.of_text("dog", min_relevance=bad)


@pytest.mark.parametrize("bad", [-0.5, 2.0, math.nan])
def test_search_text_refuses_a_bad_min_relevance(
    indexed: tuple[Library, Path], tiny_encoder: Encoder, bad: float
) -> None:
    library, _ = indexed
    with pytest.raises(InvalidQueryError, match="`min_relevance`"):
        Searcher(library, tiny_encoder, gpu="never").search_text("dog", min_relevance=bad)


# --- the derived files ----------------------------------------------------------------------------


def test_the_sample_is_written_with_the_index_and_replaced_when_stale(
    indexed: tuple[Library, Path], tiny_encoder: Encoder
) -> None:
    library, photos = indexed
    first = library.reads.generation()
    saved = read_vectors(sample_path(library.directory, first), tiny_encoder.dim)
    index = library.load_index(gpu="never")
    assert saved is not None and saved.dtype == np.float16 and len(saved) == len(index) == 13 < RELEVANCE_SAMPLE_SIZE
    np.testing.assert_array_equal(saved, draw_sample(index))
    factory.pattern_png(photos / "new.png", seed=99)
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    second = library.reads.generation()
    assert second > first and not sample_path(library.directory, first).exists()
    again = read_vectors(sample_path(library.directory, second), tiny_encoder.dim)
    assert again is not None and len(again) == 14


def test_a_sample_drawn_from_a_large_index_is_seeded_and_bounded(indexed: tuple[Library, Path]) -> None:
    from retrieval.index import VectorIndex

    vectors = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(8, gpu="never")
    index.add(np.arange(3000) * 7, vectors)
    sample = draw_sample(index)
    assert sample.shape == (RELEVANCE_SAMPLE_SIZE, 8)
    np.testing.assert_array_equal(sample, draw_sample(index))
    assert len({row.tobytes() for row in sample}) == RELEVANCE_SAMPLE_SIZE


@pytest.mark.parametrize("damage", ["garbage", "wrong dim", "missing"])
def test_a_damaged_or_missing_sample_is_drawn_again_and_saved(
    indexed: tuple[Library, Path], tiny_encoder: Encoder, damage: str
) -> None:
    library, _ = indexed
    path = sample_path(library.directory, library.reads.generation())
    if damage == "garbage":
        path.write_bytes(b"\x93NUMPY not really")
    elif damage == "wrong dim":
        np.save(path, np.ones((5, 3), dtype=np.float16))
    else:
        path.unlink()
    searcher = Searcher(library, tiny_encoder, gpu="never")
    healthy = Calibrator.fit(_neutral_like(library), draw_sample(searcher.index))
    assert searcher.calibrator.score_mean == pytest.approx(healthy.score_mean)
    rebuilt = read_vectors(path, tiny_encoder.dim)
    assert rebuilt is not None and len(rebuilt) == 13


def test_neutral_vectors_are_encoded_once_per_model_and_rebuilt_when_damaged(
    indexed: tuple[Library, Path], tiny_encoder: Encoder
) -> None:
    library, _ = indexed
    path = neutral_path(library.directory, tiny_encoder.identity.key)
    assert not path.exists()
    Searcher(library, tiny_encoder, gpu="never").search_text("dog", min_relevance=None)
    saved = read_vectors(path, tiny_encoder.dim)
    np.testing.assert_allclose(saved, tiny_encoder.encode_texts(neutral_prompts()), atol=1e-6)
    assert path.stat().st_mode & 0o777 == 0o600
    assert neutral_path(library.directory, "another model") != path
    path.write_bytes(b"broken")
    Searcher(library, tiny_encoder, gpu="never").search_text("dog", min_relevance=None)
    assert read_vectors(path, tiny_encoder.dim) is not None
    assert [p.name for p in library.directory.glob(f"{NEUTRAL_PREFIX}*")] == [path.name]


def _library_vectors(library: Library) -> np.ndarray:
    return draw_sample(library.load_index(gpu="never")).astype(np.float32)


def _neutral_like(library: Library) -> np.ndarray:
    from retrieval.relevance_files import neutral_vectors

    return neutral_vectors(library.directory, library.encoder())


# --- semantics with the reference model -----------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Searcher, dict[str, dict[str, object]]]]:
    """300 generated scenes from a seed no training split and no benchmark split uses, indexed with the
    reference model."""
    import json

    folder = tmp_path_factory.mktemp("relevance")
    dataset = generate_dataset(folder / "scenes", seed=777, sizes={"test": 300})
    records = [json.loads(line) for line in dataset.split_file("test").read_text().splitlines()]
    scene_of = {str((folder / "scenes" / r["image"]).resolve()): r["scene"] for r in records}
    with Library(folder / "library", create=True) as library:
        encoder = library.encoder(reference_spec())
        index_folders(library, encoder, [str(folder / "scenes" / "images")], workers=2)
        yield Searcher(library, encoder, gpu="never"), scene_of


@pytest.mark.slow
@pytest.mark.parametrize(
    "query",
    [
        "asdfghjkl",
        "a cat",
        "birthday cake",
    ],
)
def test_a_nonsense_query_returns_nothing_at_the_default(
    scenes: tuple[Searcher, dict[str, dict[str, object]]], query: str
) -> None:
    """Without the cutoff, the reference model ranks images for it with cosines of attribute queries' true hits
    (near 0.6); with the default cutoff nothing comes back. (Not every nonsense string: the model reads some,
    like "qwertyuiop", as a shape; benchmarks/relevance_cutoff.py counts them.)"""
    searcher, _ = scenes
    uncut = searcher.search_text(query, k=10, min_relevance=None)
    assert len(uncut) == 10 and uncut[0].score > 0.55
    assert searcher.search_text(query, k=10) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "wants"),
    [
        ("three circles", {"count": 3, "shape": "circle"}),
        ("something red", {"colour": "red"}),
        ("a striped background", {"texture": "striped"}),
        ("a blue triangle", {"colour": "blue", "shape": "triangle"}),
        ("large stars", {"size": "large", "shape": "star"}),
    ],
)
def test_the_default_keeps_true_hits_of_attribute_queries(
    scenes: tuple[Searcher, dict[str, dict[str, object]]], text: str, wants: dict[str, object]
) -> None:
    """At the default cutoff an attribute query keeps most of the true hits of its uncut top 10, and what it
    drops is no more often right than what it keeps."""
    searcher, scene_of = scenes
    query = AttributeQuery("test", text, wants)

    def right(results: list[SearchResult]) -> list[bool]:
        return [query.matches(scene_of[str(Path(result.path).resolve())]) for result in results]

    uncut = searcher.search_text(text, k=10, min_relevance=None)
    kept = searcher.search_text(text, k=10)
    assert kept == uncut[: len(kept)]
    assert sum(right(uncut)) >= 3
    assert sum(right(kept)) >= 0.7 * sum(right(uncut)), (right(kept), right(uncut))
    assert sum(right(kept)) / len(kept) >= sum(right(uncut)) / len(uncut)
    assert all(result.relevance is not None and result.relevance >= DEFAULT_MIN_RELEVANCE - 1e-6 for result in kept)
