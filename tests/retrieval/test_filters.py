"""Tests of retrieval.filters: conditions resolve through the store to one id set, which faiss applies as a
selector (hashed set or bitmap) with the same results either way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import retrieval.filters as filters
from retrieval.conditions import Within
from retrieval.errors import InvalidDateError, InvalidQueryError
from retrieval.filters import IdFilter, SearchFilter
from retrieval.index import VectorIndex
from retrieval.storage.records import FileMetadata
from retrieval.storage.store import Store
from tests.libcheck import unit_vectors

DIM = 8


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, dict[str, int]]]:
    """Rows under tmp_path/a, tmp_path/a/sub, tmp_path/ab (a name sharing a's prefix), and one failure."""
    for folder in ("a/sub", "ab"):
        (tmp_path / folder).mkdir(parents=True)
    paths = ["a/1.jpg", "a/sub/2.jpg", "ab/3.jpg", "4.jpg"]
    opened = Store(f"sqlite:///{tmp_path / 'library.db'}", create=True)
    ids = {}
    with opened.writer() as writer:
        for n, path in enumerate(paths):
            ids[path] = writer.upsert_image(
                FileMetadata(str(tmp_path / path), n, n, f"h{n}"), unit_vectors(1, n, DIM)[0], "m"
            )
        writer.record_failure(str(tmp_path / "a" / "bad.jpg"), 1, 1, "broken", None)
    yield opened, ids
    opened.close()


@dataclass(frozen=True)
class OddIds:
    """A stand-in for a future condition (dates, camera...): anything with `ids(store)` composes."""

    def ids(self, store: Store) -> np.ndarray:
        return np.array([1, 3, 5, 7], dtype=np.int64)


def test_within_resolves_to_the_folder_and_its_subfolders(store: tuple[Store, dict[str, int]], tmp_path: Path) -> None:
    """`Within` gives the ids with vectors under the folder only (not ab/, not the failed row)."""
    opened, ids = store
    resolved = SearchFilter.of(within=tmp_path / "a").resolve(opened)
    assert resolved.allowed is not None
    assert sorted(resolved.allowed.tolist()) == sorted([ids["a/1.jpg"], ids["a/sub/2.jpg"]])
    assert len(Within((tmp_path / "ab" / ".." / "ab",)).ids(opened)) == 1


def test_conditions_intersect_and_exclusions_apply(store: tuple[Store, dict[str, int]], tmp_path: Path) -> None:
    """Every condition must pass; excluded ids are removed from what the conditions allow."""
    opened, ids = store
    both = SearchFilter((Within((tmp_path,)), OddIds()), frozenset({ids["a/1.jpg"]})).resolve(opened)
    expected = sorted({ids["a/sub/2.jpg"], ids["ab/3.jpg"], ids["4.jpg"]} & {3, 5, 7})
    assert both.allowed is not None and both.allowed.tolist() == expected
    only_excluded = SearchFilter.of(exclude_ids={ids["4.jpg"]}).resolve(opened)
    assert only_excluded.allowed is None and only_excluded.excluded.tolist() == [ids["4.jpg"]]
    assert SearchFilter().resolve(opened).is_empty


def test_within_a_missing_folder_raises_naming_within(store: tuple[Store, dict[str, int]], tmp_path: Path) -> None:
    opened, _ = store
    with pytest.raises(InvalidQueryError, match="`within`"):
        SearchFilter.of(within=tmp_path / "nope").resolve(opened)


def test_bound_is_the_number_of_allowed_ids() -> None:
    """What sizes a search: the allowed ids, never more than the index holds."""
    assert IdFilter.of([4, 4, 9]).bound(100) == 2
    assert IdFilter.of(range(50)).bound(10) == 10
    assert IdFilter.of(None, [1, 2]).bound(100) == 100


@pytest.mark.parametrize("density", ["sparse", "dense"])
def test_hashed_and_bitmap_selectors_give_the_same_results(density: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same filter as an IDSelectorBatch (sparse) and an IDSelectorBitmap (dense) selects the same ids."""
    monkeypatch.setattr(filters, "FILTER_BITMAP_MIN_DENSITY", 0.0 if density == "dense" else 2.0)
    ids = np.arange(0, 3000, 3, dtype=np.int64)
    vectors = unit_vectors(len(ids), 1, DIM)
    index = VectorIndex(DIM, gpu="never")
    index.add(ids, vectors)
    allowed = ids[::7]
    id_filter = IdFilter.of(allowed)
    selector = id_filter.selector()
    assert selector is not None
    assert type(selector.sel).__name__ == ("IDSelectorBitmap" if density == "dense" else "IDSelectorBatch")
    _, found = index.search(vectors[:5], 20, id_filter)
    scores = vectors[:5] @ vectors[::7].T
    np.testing.assert_array_equal(found, allowed[np.argsort(-scores, axis=1, kind="stable")[:, :20]])


# --- filters branch: dates, camera, extensions, dimensions, orientation, several folders -----------------

FACTS = [  # name, taken_at, mtime (local), make, model, width, height
    ("a/IMG_1.JPG", datetime(2021, 1, 1, 0, 0), datetime(2030, 1, 1), "Apple", "iPhone 12", 4032, 3024),
    ("a/IMG_2.jpeg", datetime(2020, 12, 31, 23, 59, 59), datetime(2021, 3, 1), "Apple", "iPhone 8", 3024, 4032),
    ("a/sub/3.png", None, datetime(2021, 5, 31, 23, 59), None, None, 500, 500),
    ("ab/4.heic", None, datetime(2021, 6, 1, 0, 0), "Canon", "Canon EOS 5D", 6000, 4000),
    ("5.tif", datetime(2019, 6, 15, 12), datetime(2021, 6, 1), "NIKON CORPORATION", "NIKON Z 6", 100, 2000),
]


@pytest.fixture
def varied(tmp_path: Path) -> Iterator[tuple[Store, dict[str, int]]]:
    """Five images with varied facts (see FACTS) under tmp_path/a, a/sub, ab and the top, and one failure."""
    for folder in ("a/sub", "ab", "empty"):
        (tmp_path / folder).mkdir(parents=True)
    opened = Store(f"sqlite:///{tmp_path / 'library.db'}", create=True)
    ids = {}
    with opened.writer() as writer:
        for n, (name, taken, modified, make, model, width, height) in enumerate(FACTS):
            meta = FileMetadata(
                str(tmp_path / name), n, int(modified.timestamp()) * 10**9, f"h{n}", width, height, None, taken,
                make, model,
            )  # fmt: skip
            ids[name] = writer.upsert_image(meta, unit_vectors(1, n, DIM)[0], "m")
        writer.record_failure(str(tmp_path / "a" / "bad.jpg"), 1, 1, "broken", None)
    yield opened, ids
    opened.close()


def _passing(store: Store, ids: dict[str, int], **arguments: Any) -> list[str]:
    allowed = SearchFilter.of(**arguments).resolve(store).allowed
    assert allowed is not None
    names = {image_id: name for name, image_id in ids.items()}
    return sorted(names[image_id] for image_id in allowed.tolist())


def test_dates_use_taken_at_else_the_mtime_after_included_before_excluded(varied: tuple[Store, dict[str, int]]) -> None:
    """`after` 2021 keeps 2021-01-01 00:00 itself; `before` 2021-06 drops 2021-06-01 00:00; undated images
    go by their file's mtime, dated ones never do (IMG_1's mtime is in 2030)."""
    store, ids = varied
    assert _passing(store, ids, after="2021") == ["a/IMG_1.JPG", "a/sub/3.png", "ab/4.heic"]
    assert _passing(store, ids, after="2021", before="2021-06") == ["a/IMG_1.JPG", "a/sub/3.png"]
    assert _passing(store, ids, before="2021") == ["5.tif", "a/IMG_2.jpeg"]
    assert _passing(store, ids, after="2029") == []
    assert _passing(store, ids, after=date(2021, 6, 1), before=datetime(2021, 6, 1, 0, 1)) == ["ab/4.heic"]
    assert _passing(store, ids, after="2020-12-31T23:59:59", before="2021-01-01") == ["a/IMG_2.jpeg"]


def test_camera_matches_make_or_model_in_any_case(varied: tuple[Store, dict[str, int]]) -> None:
    store, ids = varied
    assert _passing(store, ids, camera="iphone") == ["a/IMG_1.JPG", "a/IMG_2.jpeg"]
    assert _passing(store, ids, camera="APPLE") == ["a/IMG_1.JPG", "a/IMG_2.jpeg"]
    assert _passing(store, ids, camera="apple iphone 1") == ["a/IMG_1.JPG"]  # "make model"
    assert _passing(store, ids, camera="eos") == ["ab/4.heic"]
    assert _passing(store, ids, camera=" z 6 ") == ["5.tif"]
    assert _passing(store, ids, camera="leica") == []


def test_extensions_any_case_dot_optional_jpeg_is_jpg(varied: tuple[Store, dict[str, int]]) -> None:
    store, ids = varied
    assert _passing(store, ids, extensions="jpg") == ["a/IMG_1.JPG", "a/IMG_2.jpeg"]
    assert _passing(store, ids, extensions=[".JPEG"]) == ["a/IMG_1.JPG", "a/IMG_2.jpeg"]
    assert _passing(store, ids, extensions="png,HEIC") == ["a/sub/3.png", "ab/4.heic"]
    assert _passing(store, ids, extensions=["tiff", "gif"]) == ["5.tif"]


def test_dimensions_and_orientation(varied: tuple[Store, dict[str, int]]) -> None:
    store, ids = varied
    assert _passing(store, ids, min_width=4032) == ["a/IMG_1.JPG", "ab/4.heic"]
    assert _passing(store, ids, min_height=4000) == ["a/IMG_2.jpeg", "ab/4.heic"]
    assert _passing(store, ids, min_width=3024, min_height=3024) == ["a/IMG_1.JPG", "a/IMG_2.jpeg", "ab/4.heic"]
    assert _passing(store, ids, orientation="landscape") == ["a/IMG_1.JPG", "ab/4.heic"]
    assert _passing(store, ids, orientation="Portrait") == ["5.tif", "a/IMG_2.jpeg"]
    assert _passing(store, ids, orientation="square") == ["a/sub/3.png"]


def test_several_folders_are_a_union_and_conditions_an_intersection(
    varied: tuple[Store, dict[str, int]], tmp_path: Path
) -> None:
    store, ids = varied
    assert _passing(store, ids, within=[tmp_path / "a" / "sub", tmp_path / "ab"]) == ["a/sub/3.png", "ab/4.heic"]
    assert _passing(store, ids, within=(tmp_path / "ab", tmp_path / "ab")) == ["ab/4.heic"]
    assert _passing(store, ids, within=[tmp_path / "a", tmp_path / "empty"], camera="apple", after="2021") == [
        "a/IMG_1.JPG"
    ]
    chosen = SearchFilter.of(within=str(tmp_path / "a"), extensions="jpg", exclude_ids={ids["a/IMG_1.JPG"]})
    resolved = chosen.resolve(store)
    assert resolved.allowed is not None and resolved.allowed.tolist() == [ids["a/IMG_2.jpeg"]]
    with pytest.raises(InvalidQueryError, match="`within`"):
        SearchFilter.of(within=[tmp_path / "a", tmp_path / "nope"]).resolve(store)


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"after": "2021-13"}, "after"),
        ({"before": "yesterday"}, "before"),
        ({"after": "2022", "before": "2021"}, "after"),
        ({"camera": "  "}, "camera"),
        ({"extensions": ""}, "extensions"),
        ({"extensions": [".", "jpg"]}, "extensions"),
        ({"min_width": 0}, "min_width"),
        ({"min_height": -3}, "min_height"),
        ({"min_width": 2.5}, "min_width"),
        ({"orientation": "diagonal"}, "orientation"),
        ({"within": []}, "within"),
    ],
)
def test_bad_filter_values_are_refused_when_made(arguments: dict[str, Any], parameter: str) -> None:
    """Each bad value is an InvalidQueryError naming its parameter, before any store is read."""
    with pytest.raises(InvalidQueryError) as caught:
        SearchFilter.of(**arguments)
    assert parameter in caught.value.parameters and f"`{parameter}`" in str(caught.value)


def test_a_bad_date_is_an_invalid_date_error() -> None:
    with pytest.raises(InvalidDateError, match="2021-06-15T14:30"):
        SearchFilter.of(after="15/06/2021")
