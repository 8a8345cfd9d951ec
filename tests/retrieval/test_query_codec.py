"""`retrieval.query_codec`: a `Query` as JSON and back, the same query either way; bad JSON refused naming the
field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.config import DEFAULT_MIN_RELEVANCE, DEFAULT_TOP_K
from retrieval.errors import InvalidDateError, InvalidQueryError, UnknownUploadError
from retrieval.filters import SearchFilter
from retrieval.query import Part, Query
from retrieval.query_codec import filter_from_json, filter_to_json, offset_from_json, query_from_json, query_to_json


def _round_trip(query: Query) -> Query:
    return query_from_json(json.loads(json.dumps(query_to_json(query))))


@pytest.mark.parametrize(
    "query",
    [
        Query.of_text("a dog"),
        Query(
            (Part(text="beach", weight=2.0), Part(text="people", weight=-1.0)), k=20, sort="-date", min_relevance=0.5
        ),
        Query(
            (Part(image_id=42), Part(text="at night", weight=0.5)), include_self=True, min_score=0.2, min_relevance=None
        ),
        Query.of_text("cake", template="a photo of {}", sort="date", min_relevance=0.0),
    ],
)
def test_a_query_survives_the_round_trip(query: Query) -> None:
    assert _round_trip(query) == query


def test_a_filter_survives_the_round_trip(tmp_path: Path) -> None:
    chosen = SearchFilter.of(
        within=[str(tmp_path / "a"), str(tmp_path / "b")],
        after="2021-06",
        before="2021-09-15T10:30",
        camera="canon",
        extensions="jpg,PNG",
        min_width=100,
        min_height=50,
        orientation="Landscape",
        exclude_ids=[3, 1],
    )
    data = filter_to_json(chosen)
    assert data == {
        "within": [str(tmp_path / "a"), str(tmp_path / "b")],
        "after": "2021-06-01T00:00:00",
        "before": "2021-09-15T10:30:00",
        "camera": "canon",
        "extensions": ["jpg", "png"],
        "min_width": 100,
        "min_height": 50,
        "orientation": "landscape",
        "exclude_ids": [1, 3],
    }
    assert filter_from_json(json.loads(json.dumps(data))) == chosen
    query = Query.of_text("x", filter=chosen)
    assert _round_trip(query) == query


def test_relative_folders_are_sent_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sent = query_to_json(Query.of_text("x", filter=SearchFilter.of(within="trip")))
    assert sent["filter"]["within"] == [str(tmp_path / "trip")]


def test_defaults_are_the_cli_s() -> None:
    text = query_from_json({"parts": [{"text": "a dog"}]})
    assert (text.k, text.sort, text.min_relevance, text.template, text.include_self) == (
        DEFAULT_TOP_K,
        "relevance",
        DEFAULT_MIN_RELEVANCE,
        None,
        False,
    )
    assert text.parts == (Part(text="a dog"),) and text.filter == SearchFilter()
    image = query_from_json({"parts": [{"image_id": 7}], "min_relevance": 0})
    assert not image.min_relevance
    assert query_from_json({"parts": [{"image_id": 7}]}).min_relevance is None
    assert query_from_json({"parts": [{"text": "x"}], "sort": "score"}).sort == "relevance"
    assert offset_from_json({"parts": [], "offset": 96}) == 96 and offset_from_json({"parts": []}) == 0


def test_a_text_is_taken_as_written() -> None:
    query = query_from_json({"parts": [{"text": "2:beach"}, {"text": "10:30 train", "weight": -0.5}]})
    assert query.parts == (Part(text="2:beach"), Part(text="10:30 train", weight=-0.5))


def test_an_upload_becomes_a_vector_part() -> None:
    vectors = {"abc": np.array([0.6, 0.8], dtype=np.float32)}

    def uploads(upload_id: str) -> np.ndarray:
        if upload_id not in vectors:
            raise UnknownUploadError(f"`upload` {upload_id!r} is unknown", parameters=("upload",))
        return vectors[upload_id]

    query = query_from_json({"parts": [{"upload": "abc", "weight": -2}, {"text": "x"}]}, uploads=uploads)
    assert query.parts[0].vector is vectors["abc"] and query.parts[0].weight == -2.0
    with pytest.raises(UnknownUploadError):
        query_from_json({"parts": [{"upload": "zzz"}]}, uploads=uploads)
    with pytest.raises(InvalidQueryError, match=r"`parts\[0\].upload`"):
        query_from_json({"parts": [{"upload": "abc"}]})
    with pytest.raises(InvalidQueryError, match="`vector`"):
        query_to_json(query)


def test_an_image_file_part_has_no_json_form(tmp_path: Path) -> None:
    with pytest.raises(InvalidQueryError, match="`image`"):
        query_to_json(Query.of_image(tmp_path / "x.jpg"))


def test_a_filter_with_a_condition_twice_has_no_json_form(tmp_path: Path) -> None:
    twice = SearchFilter(SearchFilter.of(camera="a").conditions + SearchFilter.of(camera="b").conditions)
    with pytest.raises(InvalidQueryError, match="`camera`"):
        filter_to_json(twice)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "query"),
        ({"k": 3}, "parts"),
        ({"parts": "a dog"}, "parts"),
        ({"parts": []}, "parts"),
        ({"parts": ["a dog"]}, "parts[0]"),
        ({"parts": [{}]}, "parts[0]"),
        ({"parts": [{"text": "a", "upload": "b"}]}, "parts[0]"),
        ({"parts": [{"text": "a", "colour": "red"}]}, "parts[0]"),
        ({"parts": [{"text": 3}]}, "parts[0].text"),
        ({"parts": [{"text": "a", "weight": 0}]}, "parts[0].weight"),
        ({"parts": [{"text": "a", "weight": "2"}]}, "parts[0].weight"),
        ({"parts": [{"text": "a", "weight": float("nan")}]}, "parts[0].weight"),
        ({"parts": [{"text": "a"}, {"image_id": True}]}, "parts[1].image_id"),
        ({"parts": [{"text": "a"}], "k": 2.5}, "k"),
        ({"parts": [{"text": "a"}], "k": True}, "k"),
        ({"parts": [{"text": "a"}], "k": 0}, "k"),
        ({"parts": [{"text": "a"}], "sort": "size"}, "sort"),
        ({"parts": [{"text": "a"}], "min_score": 3}, "min_score"),
        ({"parts": [{"text": "a"}], "min_relevance": -1}, "min_relevance"),
        ({"parts": [{"image_id": 1}], "min_relevance": 0.5}, "min_relevance"),
        ({"parts": [{"text": "a"}], "include_self": "yes"}, "include_self"),
        ({"parts": [{"text": "a"}], "template": "no braces"}, "template"),
        ({"parts": [{"text": "a"}], "filter": []}, "filter"),
        ({"parts": [{"text": "a"}], "filter": {"size": 3}}, "filter"),
        ({"parts": [{"text": "a"}], "filter": {"within": ["a/b"]}}, "within"),
        ({"parts": [{"text": "a"}], "filter": {"min_width": 0}}, "min_width"),
        ({"parts": [{"text": "a"}], "filter": {"orientation": "round"}}, "orientation"),
        ({"parts": [{"text": "a"}], "filter": {"extensions": []}}, "extensions"),
        ({"parts": [{"text": "a"}], "filter": {"camera": " "}}, "camera"),
    ],
)
def test_bad_json_is_refused_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidQueryError) as caught:
        query_from_json(data)
    assert f"`{field}`" in str(caught.value)


def test_a_bad_date_is_an_invalid_date_error() -> None:
    with pytest.raises(InvalidDateError, match="`after`"):
        query_from_json({"parts": [{"text": "a"}], "filter": {"after": "last june"}})
