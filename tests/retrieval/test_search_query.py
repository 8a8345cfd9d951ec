"""Tests of `Searcher.search(Query)`: fused parts, negative parts, images with texts, self-exclusion, date
order and the order of work (chosen by score, cut, then sorted).

Exact scores come from a library of hand-made vectors searched with an `Encoder` whose text vectors are
hand-chosen (a subclass of the real one: the same interface, the tiny model's identity). The plumbing with
real model vectors is checked against a numpy reference on a library indexed with the tiny model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import index_folders
from retrieval.errors import InvalidQueryError
from retrieval.filters import SearchFilter
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.query import Part, Query, fuse
from retrieval.search import Searcher
from retrieval.storage.records import FileMetadata
from tests import imagefactory as factory
from tests.libcheck import reference_vectors, store_vectors

STORED_SCORE_ATOL = 1e-3  # stored vectors are float16


class HandChosenTexts(Encoder):
    """The tiny model's encoder, whose text vectors are the hand-chosen `texts` (unit vectors by text)."""

    def __init__(self, spec: ModelSpec, texts: dict[str, np.ndarray]) -> None:
        super().__init__(spec, device="cpu", backend="torch")
        self.texts = texts
        self.asked: list[list[str]] = []

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.append(list(texts))
        return np.stack([self.texts[text] for text in texts]).astype(np.float32)


def _axis(*components: float, dim: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


@dataclass
class Shapes:
    """Four images on four axes (circle, red, blue, square): a red circle is e0 + e1, and so on."""

    library: Library
    searcher: Searcher
    encoder: HandChosenTexts
    ids: dict[str, int]
    dim: int


# name: (vector components on circle, red, blue, square; taken_at; mtime)
SHAPES = {
    "red-circle": ((1, 1, 0, 0), datetime(2021, 1, 1), datetime(2024, 5, 1)),
    "blue-circle": ((1, 0, 1, 0), None, datetime(2019, 3, 3)),
    "red-square": ((0, 1, 0, 1), datetime(2020, 2, 2), datetime(2024, 5, 1)),
    "blue-square": ((0, 0, 1, 1), None, datetime(2022, 8, 8)),
}


@pytest.fixture
def shapes(tmp_path: Path, tiny_spec: ModelSpec) -> Iterator[Shapes]:
    encoder = HandChosenTexts(tiny_spec, {})
    dim = encoder.dim
    words = {"circle": 0, "red": 1, "blue": 2, "square": 3}
    encoder.texts = {word: _axis(*([0] * axis + [1]), dim=dim) for word, axis in words.items()}
    encoder.texts |= {f"a photo of {word}": vector for word, vector in encoder.texts.items()}
    ids = {}
    with Library(tmp_path / "library", create=True) as library:
        library.bind_model(encoder)
        with library.store.writer() as writer:
            for number, (name, (components, taken, mtime)) in enumerate(SHAPES.items()):
                meta = FileMetadata(
                    f"/shapes/{name}.jpg", 100 + number, int(mtime.timestamp()) * 10**9, f"h{number}", taken_at=taken
                )
                ids[name] = writer.upsert_image(meta, _axis(*components, dim=dim), encoder.identity.short_key)
        yield Shapes(library, Searcher(library, encoder, gpu="never"), encoder, ids, dim)


def _names(shapes: Shapes, results: list) -> list[str]:  # type: ignore[type-arg]
    by_id = {image_id: name for name, image_id in shapes.ids.items()}
    return [by_id[result.id] for result in results]


def test_a_negative_part_pushes_away(shapes: Shapes) -> None:
    """`circle --not red`: the blue circle first at exactly 1/2, the red square last at -1/2; `circle` alone
    ties the two circles."""
    results = shapes.searcher.search(Query((Part(text="circle"), Part(text="red", weight=-1)), k=4))
    names = _names(shapes, results)
    assert (names[0], set(names[1:3]), names[3]) == ("blue-circle", {"red-circle", "blue-square"}, "red-square")
    np.testing.assert_allclose([r.score for r in results], [0.5, 0.0, 0.0, -0.5], atol=STORED_SCORE_ATOL)
    alone = shapes.searcher.search(Query.of_text("circle", k=2))
    assert set(_names(shapes, alone)) == {"red-circle", "blue-circle"}
    assert alone[0].score == pytest.approx(alone[1].score, abs=STORED_SCORE_ATOL)


def test_weights_change_the_balance(shapes: Shapes) -> None:
    """`2:circle 1:red` ranks the red circle first, then the blue circle (2/sqrt(10)) over the red square
    (1/sqrt(10)); `1:circle 2:red` puts the red square second."""
    circle_first = shapes.searcher.search(Query((Part(text="circle", weight=2), Part(text="red")), k=3))
    assert _names(shapes, circle_first) == ["red-circle", "blue-circle", "red-square"]
    s = np.sqrt(2) * np.sqrt(5)
    np.testing.assert_allclose([r.score for r in circle_first], [3 / s, 2 / s, 1 / s], atol=STORED_SCORE_ATOL)
    red_first = shapes.searcher.search(Query((Part(text="circle"), Part(text="red", weight=2)), k=3))
    assert _names(shapes, red_first) == ["red-circle", "red-square", "blue-circle"]


def test_an_indexed_image_with_a_text_leaves_itself_out(shapes: Shapes) -> None:
    """The red circle (by id) + `blue`: the blue circle first (score (1/2 + 1/sqrt2)/sqrt2); the red circle
    itself is left out unless `include_self`, and then scores 1/sqrt2."""
    parts = (Part(image_id=shapes.ids["red-circle"]), Part(text="blue"))
    results = shapes.searcher.search(Query(parts, k=4))
    assert _names(shapes, results) == ["blue-circle", "blue-square", "red-square"]
    assert results[0].score == pytest.approx((0.5 + 1 / np.sqrt(2)) / np.sqrt(2), abs=STORED_SCORE_ATOL)
    with_self = shapes.searcher.search(Query(parts, k=4, include_self=True))
    assert _names(shapes, with_self)[:2] == ["blue-circle", "red-circle"]
    assert with_self[1].score == pytest.approx(1 / np.sqrt(2), abs=STORED_SCORE_ATOL)


def test_a_negative_image_part_is_left_out_too(shapes: Shapes) -> None:
    """`square --not-image red-square`: the blue square first; the negated image never comes back."""
    parts = (Part(text="square"), Part(image_id=shapes.ids["red-square"], weight=-1))
    results = shapes.searcher.search(Query(parts, k=4))
    assert _names(shapes, results)[0] == "blue-square"
    assert "red-square" not in _names(shapes, results)


def test_texts_are_encoded_once_each_after_the_template(shapes: Shapes) -> None:
    """The template applies to every text part, all encoded in one batch; the result equals the literal."""
    parts = (Part(text="circle"), Part(text="red", weight=-1))
    shapes.encoder.asked.clear()
    templated = shapes.searcher.search(Query(parts, k=4, template="a photo of {}"))
    assert shapes.encoder.asked == [["a photo of circle", "a photo of red"]]
    literal = Query((Part(text="a photo of circle"), Part(text="a photo of red", weight=-1)), k=4)
    assert [(r.id, r.score) for r in templated] == [(r.id, r.score) for r in shapes.searcher.search(literal)]


def test_parts_that_cancel_and_bad_image_ids_are_refused(shapes: Shapes) -> None:
    with pytest.raises(InvalidQueryError, match="cancel"):
        shapes.searcher.search(Query((Part(text="red"), Part(text="red", weight=-1))))
    with pytest.raises(InvalidQueryError, match="`image_id`") as caught:
        shapes.searcher.search(Query((Part(image_id=999),)))
    assert caught.value.parameters == ("image_id",)
    with pytest.raises(InvalidQueryError, match="`k`"):
        shapes.searcher.search(Query.of_text("red", k=0))


def test_sort_by_date_reorders_the_k_best_by_score(shapes: Shapes) -> None:
    """`circle --not red` k=3 picks blue circle, red circle, blue square by score (the red square is 4th);
    `date` orders those three by taken_at else mtime (blue circle 2019 mtime, red circle 2021 taken, blue
    square 2022 mtime), `-date` reverses them; ranks are the positions."""
    parts = (Part(text="circle"), Part(text="red", weight=-1))
    by_date = shapes.searcher.search(Query(parts, k=3, sort="date"))
    assert _names(shapes, by_date) == ["blue-circle", "red-circle", "blue-square"]
    assert [r.rank for r in by_date] == [1, 2, 3]
    newest = shapes.searcher.search(Query(parts, k=3, sort="-date"))
    assert _names(shapes, newest) == ["blue-square", "red-circle", "blue-circle"]
    # the cutoff acts before the sort: at min_score 0.25 only the blue circle passes
    assert _names(shapes, shapes.searcher.search(Query(parts, k=3, sort="-date", min_score=0.25))) == ["blue-circle"]


def test_the_filter_applies_to_a_fused_query(shapes: Shapes) -> None:
    """A `SearchFilter` passes through: excluded ids never come back, the next ones fill k."""
    parts = (Part(text="circle"), Part(text="red", weight=-1))
    search_filter = SearchFilter.of(exclude_ids={shapes.ids["blue-circle"]})
    results = shapes.searcher.search(Query(parts, k=2, filter=search_filter))
    assert len(results) == 2 and "blue-circle" not in _names(shapes, results)


# --- real model vectors --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> Iterator[tuple[Path, Library]]:
    base = tmp_path_factory.mktemp("fused")
    root = factory.photo_folder(base / "photos")
    library = Library(base / "library", create=True)
    index_folders(library, tiny_encoder, [str(root)], workers=1)
    yield root, library
    library.close()


def test_fused_image_and_texts_equal_the_numpy_reference(
    indexed: tuple[Path, Library], tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """An indexed image (its stored vector), a new image file (encoded), a text and a negative text, with
    weights: the same ranking and scores as numpy over the stored vectors with `fuse` of the parts."""
    root, library = indexed
    indexed_image, new_image = root / "img01.png", factory.pattern_png(tmp_path / "new.png", seed=77)
    parts = (
        Part(image=indexed_image),
        Part(image=new_image, weight=0.5),
        Part(text="a red circle", weight=2),
        Part(text="stripes", weight=-1),
    )
    results = Searcher(library, tiny_encoder, gpu="never").search(Query(parts, k=5))
    dim = library.dim()
    assert dim is not None
    _generation, ids, vectors = store_vectors(library.store, dim)
    row = library.store.image_by_path(os.path.abspath(indexed_image))
    assert row is not None
    own = row.id
    pieces = np.stack(
        [
            vectors[ids == own][0],
            reference_vectors(tiny_encoder, [str(new_image)])[0],
            *tiny_encoder.encode_texts(["a red circle", "stripes"]),
        ]
    )
    query = fuse(pieces, [1, 0.5, 2, -1])
    scores = vectors @ query
    expected = [(int(i), float(s)) for i, s in sorted(zip(ids, scores, strict=True), key=lambda p: -p[1]) if i != own]
    assert [r.id for r in results] == [i for i, _ in expected[:5]]
    np.testing.assert_allclose([r.score for r in results], [s for _, s in expected[:5]], atol=1e-5)
    assert os.path.abspath(indexed_image) not in {r.path for r in results}


def test_the_one_part_wrappers_take_a_search_filter_too(shapes: Shapes) -> None:
    """`search_text`, `search_image` and `search_vector` pass `search_filter` through, with `within` (both
    must pass) and an image's own exclusion."""
    keep_out = SearchFilter.of(exclude_ids={shapes.ids["red-circle"]})
    texts = shapes.searcher.search_text("circle", k=4, search_filter=keep_out)
    assert _names(shapes, texts)[0] == "blue-circle" and "red-circle" not in _names(shapes, texts)
    vector = _axis(1, dim=shapes.dim)
    by_vector = shapes.searcher.search_vector(vector, k=4, search_filter=keep_out, within="/shapes")
    assert [r.id for r in by_vector] == [r.id for r in texts]
    assert shapes.searcher.search_vector(vector, k=4, search_filter=keep_out, within=shapes.library.directory) == []
