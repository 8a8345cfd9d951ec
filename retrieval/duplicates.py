"""Near-duplicates: groups of images that are copies of one another (re-encodes, resizes, crops, small edits).

Pairs: every stored vector queries the library's FAISS index with one range search (faiss `range_search`,
DUPLICATE_QUERY_BATCH vectors per call so that faiss spreads each call over its threads), which returns
every image whose cosine to it is at least `threshold`. An IVF index visits DUPLICATE_NPROBE lists per query
instead of its search nprobe: a near-duplicate lies so close to its original that it nearly always sits in
the same list or a neighbour's (pair recall against exact search: benchmarks/duplicates_cost.py). Pairs
found from either side count once.

Groups, without chaining: union-find would put A and C together when A~B~C although A and C may be far
apart. Instead every group is a star around its best copy. Images that have a pair are taken in best-copy
order; each one not yet grouped becomes the best copy of a group holding every image not yet grouped that
scores at least `threshold` against it. So every member of a group is a near-duplicate of the group's best
copy (its `score` is the cosine to it), each image is in one group at most, and the best copy is the best
of its group. An image whose only near-duplicates went to a better copy's group before it stays out.

Best-copy order: most pixels (width x height), then oldest date (EXIF date taken, else the file's
modification time), then largest file, then path. Groups come ordered by their best copy's path. Nothing is deleted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.config import (
    DEFAULT_DUPLICATE_THRESHOLD,
    DUPLICATE_MIN_THRESHOLD,
    DUPLICATE_NPROBE,
    DUPLICATE_QUERY_BATCH,
)
from retrieval.errors import InvalidQueryError
from retrieval.filters import IdFilter, SearchFilter
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.storage.records import ImageRecord

_ROUNDING = 1e-3
"""Slack on the threshold: scores come from the store's float16 vectors, whose cosine to themselves is 1 to
within about 1e-4 (at 32 dimensions; less at 512), so identical images must still pass `threshold` 1.0.
Reported scores are capped at 1."""


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a group: its stored facts and its cosine `score` to the group's best copy (1.0 for it)."""

    id: int
    path: str
    size: int
    width: int | None
    height: int | None
    taken_at: datetime | None
    mtime_ns: int
    score: float

    @classmethod
    def of(cls, record: ImageRecord, score: float) -> DuplicateMember:
        return cls(
            record.id, record.path, record.size, record.width, record.height, record.taken_at, record.mtime_ns, score
        )

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    @property
    def date(self) -> datetime:
        """When the picture was taken (EXIF), else when the file was last modified (naive UTC, as stored)."""
        if self.taken_at is not None:
            return self.taken_at
        return datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc).replace(tzinfo=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "score": self.score,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
        }


def best_copy_key(member: DuplicateMember) -> tuple[int, datetime, int, str]:
    """Sorts the best copy first: most pixels, oldest date, largest file, then path. Date before file size: an
    edit saved later (a watermark, a PNG of a JPEG) can be the larger file, while the original is older."""
    return (-member.pixels, member.date, -member.size, member.path)


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-duplicate images, the best copy first, then the others by score (highest first) and path."""

    members: tuple[DuplicateMember, ...]

    @property
    def best(self) -> DuplicateMember:
        return self.members[0]

    @property
    def copies(self) -> tuple[DuplicateMember, ...]:
        return self.members[1:]

    @property
    def reclaimable(self) -> int:
        """Bytes freed if every copy but the best were removed."""
        return sum(member.size for member in self.copies)

    def to_json(self) -> dict[str, Any]:
        return {
            "best": self.best.path,
            "images": len(self.members),
            "reclaimable_bytes": self.reclaimable,
            "members": [member.to_json() | {"best": number == 0} for number, member in enumerate(self.members)],
        }


def check_threshold(threshold: float) -> None:
    """A cosine from DUPLICATE_MIN_THRESHOLD to 1; NaN, infinities and anything outside are refused."""
    if not (math.isfinite(threshold) and DUPLICATE_MIN_THRESHOLD <= threshold <= 1.0):
        raise InvalidQueryError(
            f"`threshold` must be a cosine similarity from {DUPLICATE_MIN_THRESHOLD} to 1, not {threshold} "
            f"(lower values pair up unrelated images; the default is {DEFAULT_DUPLICATE_THRESHOLD})",
            parameters=("threshold",),
        )


def find_duplicates(
    library: Library,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    *,
    within: str | Path | Sequence[str | Path] | None = None,
    search_filter: SearchFilter | None = None,
    nprobe: int = DUPLICATE_NPROBE,
) -> list[DuplicateGroup]:
    """Groups of near-duplicate images of `library` (cosine at least `threshold` to the group's best copy),
    only among the images under `within` (one folder or several) and passing `search_filter` (dates, camera,
    ...) when given: both images of a pair must pass. An empty library has none."""
    check_threshold(threshold)
    index = library.load_index(gpu="never", mmap=True)
    chosen = (SearchFilter.of(within=within) if within is not None else SearchFilter()).both(search_filter)
    id_filter = chosen.resolve(library.reads) if chosen.conditions or chosen.exclude else IdFilter()
    first, second, scores = duplicate_pairs(index, threshold, id_filter, nprobe=nprobe)
    rows = library.reads.rows_by_ids(np.unique(np.concatenate([first, second])).tolist())
    return group_pairs(first, second, scores, rows)


def duplicate_pairs(
    index: VectorIndex,
    threshold: float,
    id_filter: IdFilter | None = None,
    *,
    nprobe: int = DUPLICATE_NPROBE,
    batch: int = DUPLICATE_QUERY_BATCH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first ids, second ids, cosines), first < second, of every pair of `index`'s vectors (both passing
    `id_filter`) scoring at least `threshold`; each pair once, in no particular order."""
    id_filter = id_filter or IdFilter()
    ids = index.ids()
    if id_filter.allowed is not None:
        ids = np.intersect1d(ids, id_filter.allowed)
    ids = np.setdiff1d(ids, id_filter.excluded)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(ids), batch):
        queries = ids[start : start + batch]
        lims, distances, neighbours = index.range_search(
            index.reconstruct(queries), threshold - _ROUNDING, id_filter, nprobe=nprobe
        )
        query_of = np.repeat(queries, np.diff(lims))
        keep = (neighbours >= 0) & (neighbours != query_of)
        low, high = np.minimum(query_of, neighbours)[keep], np.maximum(query_of, neighbours)[keep]
        found.append((low, high, distances[keep]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    low, high, scores = (np.concatenate(parts) for parts in zip(*found, strict=True))
    _, first = np.unique(np.stack([low, high], axis=1), axis=0, return_index=True)
    return low[first], high[first], np.minimum(scores[first], 1.0)


def group_pairs(
    first: np.ndarray, second: np.ndarray, scores: np.ndarray, rows: dict[int, ImageRecord]
) -> list[DuplicateGroup]:
    """Star groups around best copies (see the module's docstring) from pairs and the rows of their images;
    a pair whose row is gone (deleted since the index was loaded) is left out."""
    neighbours: dict[int, dict[int, float]] = {}
    for a, b, score in zip(first.tolist(), second.tolist(), scores.tolist(), strict=True):
        if a in rows and b in rows:
            neighbours.setdefault(a, {})[b] = score
            neighbours.setdefault(b, {})[a] = score
    candidates = sorted((DuplicateMember.of(rows[i], 1.0) for i in neighbours), key=best_copy_key)
    grouped: set[int] = set()
    groups = []
    for best in candidates:
        if best.id in grouped:
            continue
        members = [
            DuplicateMember.of(rows[other], score)
            for other, score in neighbours[best.id].items()
            if other not in grouped
        ]
        if members:
            members.sort(key=lambda member: (-member.score, member.path))
            grouped.update([best.id, *(member.id for member in members)])
            groups.append(DuplicateGroup((best, *members)))
    return sorted(groups, key=lambda group: group.best.path)


def summary(groups: Iterable[DuplicateGroup]) -> tuple[int, int, int]:
    """(groups, images in them, bytes reclaimable if all but each group's best copy were removed)."""
    listed = list(groups)
    return len(listed), sum(len(group.members) for group in listed), sum(group.reclaimable for group in listed)
