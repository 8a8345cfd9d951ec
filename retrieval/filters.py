"""Search filters: which stored images a search may return.

A `SearchFilter` is a conjunction of conditions plus ids to leave out. Each condition resolves to the
ids that pass it through an indexed store query (`Within`: a path range); `resolve` intersects them into
one `IdFilter`, which faiss applies inside the search as an IDSelector (a hashed id set, or a bitmap for a
dense set), so a filtered search ranks exactly the images that pass instead of cutting a fixed top-k.
New conditions (dates, camera, extension, dimensions, orientation) are classes with an `ids(store)`
method, added to `SearchFilter.conditions`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from retrieval.config import FILTER_BITMAP_MIN_DENSITY
from retrieval.errors import InvalidQueryError

_faiss: Any = faiss  # faiss's type stubs lag its SWIG API (selectors, search parameters, direct maps, IO)


if TYPE_CHECKING:
    from retrieval.storage.reader import StoreReads as Store


class Condition(Protocol):
    def ids(self, store: Store) -> np.ndarray:
        """The ids of stored images with vectors that pass, as int64 (any order)."""
        ...


@dataclass(frozen=True)
class Within:
    """Images under `folder` (its subfolders included; `trip` does not hold `trip-extra`)."""

    folder: str | Path

    def ids(self, store: Store) -> np.ndarray:
        folder = os.path.abspath(os.path.expanduser(str(self.folder)))
        found = store.ids_under(folder)
        if not len(found) and not os.path.isdir(folder):
            raise InvalidQueryError(
                f"`within` names {folder}, which is not a folder (and no indexed image is under it)",
                parameters=("within",),
            )
        return found


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
            inner = _faiss.IDSelectorBatch(self.excluded)
            return Selector(_faiss.IDSelectorNot(inner), (inner, self.excluded))
        return None


def _allowing(ids: np.ndarray) -> Selector:
    """A bitmap over 0..max id when `ids` are dense enough (one bit per id), else a hashed id set."""
    if len(ids) and ids[0] >= 0 and len(ids) >= FILTER_BITMAP_MIN_DENSITY * (int(ids[-1]) + 1):
        bits = np.zeros(int(ids[-1]) + 1, dtype=bool)
        bits[ids] = True
        bitmap = np.packbits(bits, bitorder="little")
        return Selector(_faiss.IDSelectorBitmap(bitmap), (bitmap,))
    return Selector(_faiss.IDSelectorBatch(ids), (ids,))


@dataclass(frozen=True)
class SearchFilter:
    """All `conditions` must pass; `exclude` ids never come back (an image query's own id)."""

    conditions: tuple[Condition, ...] = ()
    exclude: frozenset[int] = frozenset()

    @classmethod
    def of(cls, *, within: str | Path | None = None, exclude_ids: set[int] | None = None) -> SearchFilter:
        conditions: tuple[Condition, ...] = (Within(within),) if within is not None else ()
        return cls(conditions, frozenset(exclude_ids or ()))

    def resolve(self, store: Store) -> IdFilter:
        """One id set for the whole filter, through one indexed store query per condition."""
        allowed: np.ndarray | None = None
        for condition in self.conditions:
            ids = _id_array(condition.ids(store))
            allowed = ids if allowed is None else np.intersect1d(allowed, ids, assume_unique=True)
        return IdFilter.of(allowed, sorted(self.exclude))
