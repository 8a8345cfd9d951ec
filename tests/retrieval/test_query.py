"""Tests of retrieval.query: weights in words, parts, the fusion rule and its edge cases, date order."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from retrieval.config import NOT_WEIGHT
from retrieval.errors import InvalidQueryError
from retrieval.query import Part, Query, fuse, parse_weighted, result_date, sort_results, text_parts
from retrieval.search import SearchResult
from retrieval.storage.vectors import as_stored


@pytest.mark.parametrize(
    ("token", "weight", "text"),
    [
        ("beach", 1.0, "beach"),
        ("2:beach", 2.0, "beach"),
        ("-1:people", -1.0, "people"),
        ("+0.5:sunset", 0.5, "sunset"),
        (".25:red car", 0.25, "red car"),
        ("1.5:a dog", 1.5, "a dog"),
        ("10:30 train", 1.0, "10:30 train"),  # a digit after the colon: a time, not a weight
        ("ratio 16:9", 1.0, "ratio 16:9"),
        ("2: beach", 1.0, "2: beach"),  # a space after the colon: plain text
        ("\\2:beach", 1.0, "2:beach"),  # the escape: a leading backslash keeps the rest literal
        ("\\\\x", 1.0, "\\x"),
        ("beach:2", 1.0, "beach:2"),
        ("2:", 1.0, "2:"),
        ("x2:beach", 1.0, "x2:beach"),
    ],
)
def test_parse_weighted(token: str, weight: float, text: str) -> None:
    assert parse_weighted(token) == Part(text=text, weight=weight)


@pytest.mark.parametrize("token", ["0:beach", "-0:beach", "0.0:beach", "+0:x"])
def test_zero_weight_is_refused_naming_weight(token: str) -> None:
    with pytest.raises(InvalidQueryError, match="`weight`") as caught:
        parse_weighted(token)
    assert caught.value.parameters == ("weight",)


def test_text_parts_join_plain_words_and_keep_weighted_words_apart() -> None:
    """Plain words are one text wherever they stand; each weighted word is its own part; `--not` is -1."""
    assert text_parts(["red", "car"]) == [Part(text="red car")]
    assert text_parts(["beach", "2:sunset", "evening", "-1:people"], ["dogs"]) == [
        Part(text="beach evening"),
        Part(text="sunset", weight=2.0),
        Part(text="people", weight=-1.0),
        Part(text="dogs", weight=NOT_WEIGHT),
    ]
    assert text_parts(["10:30", "train"]) == [Part(text="10:30 train")]
    assert text_parts([]) == []


@pytest.mark.parametrize(
    "given",
    [{}, {"text": "a", "image": "b.jpg"}, {"image": "b.jpg", "image_id": 3}, {"text": "  "}],
)
def test_a_part_is_exactly_one_non_empty_thing(given: dict[str, object]) -> None:
    with pytest.raises(InvalidQueryError):
        Part(**given)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, 0.0, float("nan"), float("inf"), float("-inf")])
def test_a_part_weight_must_be_finite_and_not_zero(weight: float) -> None:
    with pytest.raises(InvalidQueryError, match="`weight`"):
        Part(text="beach", weight=weight)


def test_a_query_needs_parts_and_a_known_sort() -> None:
    with pytest.raises(InvalidQueryError, match="no parts"):
        Query(())
    with pytest.raises(InvalidQueryError, match="`sort`") as caught:
        Query.of_text("beach", sort="newest")
    assert caught.value.parameters == ("sort",)
    assert Query([Part(text="a")]).parts == (Part(text="a"),)  # a list is kept as a tuple (hashable, frozen)


def _unit(*components: float) -> np.ndarray:
    vector = np.array(components, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_fuse_is_the_renormalised_weighted_sum_of_unit_vectors() -> None:
    """2*e0 - e1 over unit inputs (one given unnormalised: it is normalised first), renormalised."""
    fused = fuse(np.stack([_unit(1, 0, 0), np.array([0, 3, 0], dtype=np.float32)]), [2.0, -1.0])
    np.testing.assert_allclose(fused, _unit(2, -1, 0), atol=1e-6)
    assert fused.dtype == np.float32


def test_fuse_of_one_part_is_that_part_times_its_sign() -> None:
    vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(fuse(vector[None], [3.0]), vector)
    np.testing.assert_array_equal(fuse(vector[None], [-0.5]), -vector)


def test_fuse_refuses_parts_that_cancel() -> None:
    """`red` and `-1:red`, or two halves that sum to nothing: an InvalidQueryError naming `weight`."""
    red = _unit(0.3, 0.4, 0.5)
    with pytest.raises(InvalidQueryError, match="cancel") as caught:
        fuse(np.stack([red, red]), [1.0, -1.0])
    assert caught.value.parameters == ("weight",)
    with pytest.raises(InvalidQueryError, match="cancel"):
        fuse(np.stack([red, red, red]), [0.5, 0.5, -1.0])
    np.testing.assert_allclose(fuse(np.stack([red, red]), [2.0, -1.0]), red, atol=1e-6)  # not cancelled
    encoded = _unit(*np.random.default_rng(3).standard_normal(64))
    with pytest.raises(InvalidQueryError, match="cancel"):  # an image less its own stored (float16) vector
        fuse(np.stack([encoded, as_stored(encoded)]), [1.0, -1.0])
    near = np.stack([_unit(1, 0, 0), _unit(0.99, np.sqrt(1 - 0.99**2), 0)])  # cosine 0.99: a real difference
    np.testing.assert_allclose(fuse(near, [1.0, -1.0]), _unit(0.01, -np.sqrt(1 - 0.99**2), 0), atol=1e-5)


def _result(rank: int, taken: datetime | None, mtime: datetime) -> SearchResult:
    mtime_ns = int(mtime.timestamp()) * 10**9
    return SearchResult(rank, 1 - rank / 10, None, rank, f"/p/{rank}.jpg", 10, 10, taken, None, None, 1, mtime_ns)


def test_result_date_falls_back_to_mtime() -> None:
    taken, modified = datetime(2019, 5, 1, 12), datetime(2022, 1, 2, 3, 4, 5)
    assert result_date(_result(1, taken, modified)) == taken
    assert result_date(_result(1, None, modified)) == modified


def test_sort_by_date_uses_taken_else_mtime_and_renumbers_ranks() -> None:
    """Oldest first for `date`, newest first for `-date`, taken_at before mtime; equal dates keep their
    score order in both; `relevance` keeps the given order; ranks are the new positions."""
    same = datetime(2020, 6, 1)
    results = [
        _result(1, None, datetime(2021, 3, 1)),  # mtime only
        _result(2, datetime(2018, 1, 1), datetime(2024, 1, 1)),  # taken long before its mtime
        _result(3, same, datetime(2024, 1, 1)),
        _result(4, None, same),  # the same date as 3, by mtime
        _result(5, datetime(2023, 7, 7), datetime(2000, 1, 1)),
    ]
    oldest = sort_results(results, "date")
    assert [r.id for r in oldest] == [2, 3, 4, 1, 5]
    assert [r.rank for r in oldest] == [1, 2, 3, 4, 5]
    assert [r.id for r in sort_results(results, "-date")] == [5, 1, 3, 4, 2]
    assert sort_results(results, "relevance") == results
    assert [replace(r, rank=r.id) for r in oldest] == sorted(results, key=result_date)


def test_fuse_of_weights_near_the_float_limits_is_the_same_direction() -> None:
    """Weights of 1e308 overflowed the weighted sum into a NaN vector (a search then scored NaN); only the
    weights' ratios matter."""
    red, blue = _unit(1, 0, 0), _unit(0, 1, 0)
    huge = fuse(np.stack([red, blue]), [1e308, 1e308])
    np.testing.assert_allclose(huge, fuse(np.stack([red, blue]), [1.0, 1.0]), atol=1e-6)
    tiny = fuse(np.stack([red, blue]), [1e-320, -2e-320])
    np.testing.assert_allclose(tiny, fuse(np.stack([red, blue]), [1.0, -2.0]), atol=1e-6)
