"""Search filters: which stored images a search may return.

A `SearchFilter` is a conjunction of conditions plus ids to leave out. Each condition (`retrieval.conditions`:
folders, dates, camera, extensions, minimum dimensions, orientation) resolves to the ids that pass it through
indexed store queries; `resolve` intersects them into one `IdFilter`, which faiss applies inside the search
as an IDSelector (a hashed id set, or a bitmap for a dense set), so a filtered search ranks exactly the images
that pass instead of cutting a fixed top-k: it returns k results whenever k images pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.conditions import AtLeast, Camera, Condition, Dated, Extension, Orientation, Within
from retrieval.config import FILTER_BITMAP_MIN_DENSITY
from retrieval.dates import DateRange

if TYPE_CHECKING:
    from retrieval.storage.reader import StoreReads as Store


def _id_array(ids: Any) -> np.ndarray:
    """`ids` sorted and unique, as int64. Not `np.unique`, which imports `numpy.ma` (45 ms of a cold query)."""
    ordered = np.sort(np.asarray(ids, dtype=np.int64).reshape(-1))
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


@dataclass(frozen=True)
class Selector:
    """A faiss IDSelector and the objects it points into, which must outlive the search."""

    sel: Any
    keep: tuple[Any, ...] = ()


@dataclass(frozen=True)
class IdFilter:
    """Resolved filter: `allowed` ids (None: any), less `excluded`; both sorted and unique."""

    allowed: np.ndarray | None = None
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, allowed: Any = None, excluded: Any = ()) -> IdFilter:
        out = _id_array(excluded)
        if allowed is None:
            return cls(None, out)
        return cls(np.setdiff1d(_id_array(allowed), out, assume_unique=True), out)

    def excluding(self, ids: Any) -> IdFilter:
        """This filter, leaving out `ids` as well."""
        return IdFilter.of(self.allowed, np.concatenate([self.excluded, _id_array(ids)]))

    @property
    def is_empty(self) -> bool:
        return self.allowed is None and not len(self.excluded)

    def bound(self, total: int) -> int:
        """At most how many of an index's `total` vectors can pass: what sizes a search, never k."""
        return total if self.allowed is None else min(total, len(self.allowed))

    def selector(self) -> Selector | None:
        if self.allowed is not None:
            return _allowing(self.allowed)
        if len(self.excluded):
            _faiss = _faiss_module()
            inner = _faiss.IDSelectorBatch(self.excluded)
            return Selector(_faiss.IDSelectorNot(inner), (inner, self.excluded))
        return None


def _faiss_module() -> Any:
    """faiss, imported when a selector is built (a search), not when a filter is made: a query sent to a running
    server builds its filter without searching (70 ms of its start). `Any`: faiss's type stubs lag its SWIG API."""
    import faiss

    return faiss


def _allowing(ids: np.ndarray) -> Selector:
    """A bitmap over 0..max id when `ids` are dense enough (one bit per id), else a hashed id set."""
    _faiss = _faiss_module()
    if len(ids) and ids[0] >= 0 and len(ids) >= FILTER_BITMAP_MIN_DENSITY * (int(ids[-1]) + 1):
        bits = np.zeros(int(ids[-1]) + 1, dtype=bool)
        bits[ids] = True
        bitmap = np.packbits(bits, bitorder="little")
        return Selector(_faiss.IDSelectorBitmap(bitmap), (bitmap,))
    return Selector(_faiss.IDSelectorBatch(ids), (ids,))


def _several(given: Any) -> tuple[Any, ...]:
    """One value (a string or path) or several, as a tuple."""
    return (given,) if isinstance(given, (str, Path)) else tuple(given)


@dataclass(frozen=True)
class SearchFilter:
    """All `conditions` must pass; `exclude` ids never come back (an image query's own id)."""

    conditions: tuple[Condition, ...] = ()
    exclude: frozenset[int] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        within: str | Path | Iterable[str | Path] | None = None,
        after: str | date | datetime | None = None,
        before: str | date | datetime | None = None,
        camera: str | None = None,
        extensions: str | Iterable[str] | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        orientation: str | None = None,
        exclude_ids: Iterable[int] | None = None,
    ) -> SearchFilter:
        """Images under any of the folders `within` (one or several), dated from `after` (included) to
        `before` (excluded) (`retrieval.dates`: `2021`, `2021-06`, `2021-06-15`, an ISO date and time), shot
        with a `camera` whose make or model holds the text (any case), with one of the file `extensions`, at
        least `min_width` and `min_height` pixels, in an `orientation` (landscape, portrait, square); never
        `exclude_ids`. None leaves a condition out; every condition given must pass. Bad values raise an
        `InvalidQueryError` (`InvalidDateError` for dates) naming the parameter."""
        conditions: list[Condition] = []
        if within is not None:
            conditions.append(Within(_several(within)))
        if after is not None or before is not None:
            conditions.append(Dated(DateRange.of(after, before)))
        if camera is not None:
            conditions.append(Camera(camera))
        if extensions is not None:
            conditions.append(Extension(tuple(_several(extensions))))
        sizes = (("width", min_width), ("height", min_height))
        conditions += [AtLeast(side, pixels) for side, pixels in sizes if pixels is not None]
        if orientation is not None:
            conditions.append(Orientation(orientation))
        return cls(tuple(conditions), frozenset(int(i) for i in exclude_ids or ()))

    def both(self, other: SearchFilter | None) -> SearchFilter:
        """A filter passing what this one and `other` (None: no more) both pass."""
        if other is None:
            return self
        return SearchFilter(self.conditions + other.conditions, self.exclude | other.exclude)

    def resolve(self, store: Store) -> IdFilter:
        """One id set for the whole filter, through one indexed store query per condition."""
        allowed: np.ndarray | None = None
        for condition in self.conditions:
            ids = _id_array(condition.ids(store))
            allowed = ids if allowed is None else np.intersect1d(allowed, ids, assume_unique=True)
        return IdFilter.of(allowed, sorted(self.exclude))
