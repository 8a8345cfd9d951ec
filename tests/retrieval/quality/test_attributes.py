"""Tests of quality.attributes: the fixed attribute queries, precision@k, and reading captions' constraints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from retrieval.quality.attributes import (
    ATTRIBUTES,
    AttributeQuery,
    attribute_precision,
    attribute_queries,
    constraints_of,
    satisfies,
    scene_of,
)
from retrieval.quality.scenes import COLOURS, HELD_OUT_PAIRS, SHAPES, captions_of, sample_scene, short_caption_of


def _scene(**overrides: Any) -> dict[str, Any]:
    scene = {
        "shape": "circle",
        "colour": "red",
        "size": "large",
        "count": 3,
        "position": "left",
        "background": "blue",
        "texture": "striped",
    }
    return scene | overrides


def test_queries_are_fixed_cover_every_attribute_and_every_pair() -> None:
    queries = attribute_queries()
    assert queries == attribute_queries()  # no randomness: the same list on every call and machine
    assert {query.attribute for query in queries} == set(ATTRIBUTES)
    assert len({query.text for query in queries}) == len(queries)
    pairs = {(q.wants["shape"], q.wants["colour"]) for q in queries if q.attribute == "colour+shape"}
    assert pairs == {(shape, colour) for shape in SHAPES for colour in COLOURS}
    assert set(HELD_OUT_PAIRS) <= pairs
    by_text = {query.text: query for query in queries}
    assert by_text["three circles"].wants == {"count": 3, "shape": "circle"}
    assert by_text["a blue triangle"].wants == {"colour": "blue", "shape": "triangle"}
    assert by_text["a striped background"].wants == {"texture": "striped"}


def test_every_query_means_what_its_words_say() -> None:
    """Each query's required attributes are ones its own words ask for, as the caption reader reads them."""
    for query in attribute_queries():
        read = constraints_of(query.text)
        for name, value in query.wants.items():
            assert value in read[name], (query.text, read)


def test_precision_counts_hits_whose_scene_has_every_attribute_asked_for() -> None:
    scenes = [
        _scene(),
        _scene(shape="square"),
        _scene(count=2),
        _scene(colour="green"),
    ]
    query = AttributeQuery("count", "three circles", {"count": 3, "shape": "circle"})
    other = AttributeQuery("colour", "something green", {"colour": "green"})
    ranked = np.array([[0, 1, 3, 2], [3, 0, 1, 2]])
    result = attribute_precision(ranked, [query, other], scenes, ks=(1, 3))
    # query 1: hits 0 (yes), 1 (square), 3 (green three circles: yes) -> P@1 100, P@3 2/3
    assert result.per_query[0]["P@1"] == 100.0
    assert result.per_query[0]["P@3"] == pytest.approx(200 / 3)
    assert result.per_query[0]["relevant"] == 2
    assert result.per_query[1]["P@1"] == 100.0 and result.per_query[1]["P@3"] == pytest.approx(100 / 3)
    assert result.table["count"] == {"P@1": 100.0, "P@3": pytest.approx(200 / 3), "queries": 1}
    assert set(result.table) == {"count", "colour"}
    assert result.to_json()["attributes"] == result.table


def test_missing_results_count_as_misses() -> None:
    query = AttributeQuery("shape", "circles", {"shape": "circle"})
    result = attribute_precision(np.array([[0, -1, -1]]), [query], [_scene()], ks=(3,))
    assert result.per_query[0]["P@3"] == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("three red circles", {"count": {3}, "colour": {"red"}, "shape": {"circle"}}),
        ("blue crosses on red", {"colour": {"blue"}, "shape": {"cross"}, "count": {2, 3}, "background": {"red"}}),
        ("something red", {"colour": {"red"}}),
        ("red shapes", {"colour": {"red"}}),
        ("on a red background", {"background": {"red"}}),
        ("the background is red and stripy", {"background": {"red"}, "texture": {"striped"}}),
        ("a pair of big red circles near the top", {"count": {2}, "size": {"large"}, "colour": {"red"}}),
        ("a single tiny blue star", {"count": {1}, "size": {"small"}, "colour": {"blue"}, "shape": {"star"}}),
        ("a dog on the beach", {}),
    ],
)
def test_constraints_of_reads_colour_count_and_background(text: str, expected: dict[str, set[Any]]) -> None:
    read = constraints_of(text)
    assert {name: set(read[name]) for name in expected} == expected
    if not expected:
        assert read == {}


def test_full_captions_pin_their_scene_and_short_ones_are_true_of_it() -> None:
    """Over many sampled scenes: each full caption alone gives back the scene; every short caption asks only
    what the scene has, and asks something."""
    rng = random.Random("attributes")
    for _ in range(300):
        scene = sample_scene(rng, held_out=None)
        truth = {name: value for name, value in scene.to_json().items() if name != "held_out"}
        for caption in captions_of(scene, rng, 3):
            assert scene_of([caption]) == truth, caption
        for _ in range(4):
            short = short_caption_of(scene, rng)
            wants = constraints_of(short)
            assert wants and satisfies(truth, wants), (short, truth)
            assert scene_of([short]) is None


def test_satisfies_needs_every_constraint() -> None:
    wants = constraints_of("three red circles")
    assert satisfies(_scene(), wants)
    assert not satisfies(_scene(count=2), wants)
    assert not satisfies(_scene(shape="star"), wants)
    assert satisfies(_scene(), {})


def test_the_loose_reading_asks_no_count_of_a_bare_singular_noun() -> None:
    """As the attribute benchmark and the demo read a query: "a blue triangle" is any number of blue
    triangles; "a single"/"one" still ask for one, a plural still for two or three."""
    assert constraints_of("a blue triangle", implied_count=False) == {
        "colour": frozenset({"blue"}),
        "shape": frozenset({"triangle"}),
    }
    assert constraints_of("a blue triangle")["count"] == frozenset({1})
    assert constraints_of("a single blue triangle", implied_count=False)["count"] == frozenset({1})
    assert constraints_of("one triangle", implied_count=False)["count"] == frozenset({1})
    assert constraints_of("blue triangles", implied_count=False)["count"] == frozenset({2, 3})
    for query in attribute_queries():
        if query.attribute == "colour+shape":
            assert constraints_of(query.text, implied_count=False) == {
                name: frozenset({value}) for name, value in query.wants.items()
            }
