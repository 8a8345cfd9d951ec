"""Tests of retrieval.filters: conditions resolve through the store to one id set, which faiss applies as a
selector (hashed set or bitmap) with the same results either way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import retrieval.filters as filters
from retrieval.conditions import Within
from retrieval.errors import InvalidQueryError
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
