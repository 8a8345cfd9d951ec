"""The search filters' store queries, written once for the `Store` (SQLAlchemy, any backend) and the light
`StoreReader` (stdlib sqlite3), and the filter columns every write fills (`filter_columns`).

Each filter is a few plain, portable SELECTs with named parameters (`:name`, which both sqlite3 and
SQLAlchemy's `text()` take), each a range or an equality on an index whose columns cover it (migration
0004): no filter reads the table. `has_vector` stays out of the WHERE clauses (so no planner prefers the
(has_vector, ...) indexes and reads every row, as `Store.ids_under` found) and is checked on the ids read.

- dates: EXIF `taken_at` in range, or no `taken_at` and the file's `mtime_ns` in range, on
  (taken_at, mtime_ns, has_vector);
- camera: the stored `camera` name ("make model") is listed by a loose index scan (one index probe per
  distinct camera), matched by the caller, and its ids read by equality on (camera, has_vector);
- extension, orientation: equality on (extension, has_vector), (orientation, has_vector);
- minimum width or height: a range on (width, has_vector), (height, has_vector).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from retrieval.config import EXTENSION_MAX_CHARS, EXTENSION_SYNONYMS
from retrieval.dates import DateRange, epoch_ns

_IDS = "SELECT id, has_vector FROM images WHERE "
_LIST_CHUNK = 500
DIMENSIONS = ("width", "height")

CAMERA_NAMES = """
WITH RECURSIVE cameras(name) AS (
    SELECT min(camera) FROM images
    UNION ALL
    SELECT (SELECT min(camera) FROM images WHERE camera > cameras.name) FROM cameras WHERE cameras.name IS NOT NULL
)
SELECT name FROM cameras WHERE name IS NOT NULL
"""
"""Every distinct stored camera name, ascending: a loose index scan of (camera, has_vector), one probe per
name, where `SELECT DISTINCT` would read the whole index (standard SQL, SQLite and PostgreSQL alike)."""


@dataclass(frozen=True)
class FilterQuery:
    """Statements whose rows are (id, has_vector); the ids with a vector of all of them are the filter's.
    Parameters that are datetimes are bound as each backend stores a DateTime."""

    statements: tuple[tuple[str, dict[str, Any]], ...]


def with_vectors(rows: Iterable[tuple[Any, Any]]) -> np.ndarray:
    """The ids of `rows` (id, has_vector) that have a vector, ascending."""
    return np.sort(np.fromiter((int(image_id) for image_id, has in rows if has), dtype=np.int64))


def dated(dates: DateRange) -> FilterQuery:
    """Images dated in `dates`: taken then, or without a date taken and modified then."""
    taken: dict[str, Any] = {"start": dates.start, "end": dates.end}
    modified: dict[str, Any] = {
        "start_ns": None if dates.start is None else epoch_ns(dates.start),
        "end_ns": None if dates.end is None else epoch_ns(dates.end),
    }
    return FilterQuery(
        (
            _range("taken_at IS NOT NULL", "taken_at", "start", "end", taken),
            _range("taken_at IS NULL", "mtime_ns", "start_ns", "end_ns", modified),
        )
    )


def _range(where: str, column: str, low: str, high: str, bounds: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`where` and `low <= column < high`, for the bounds given (None: open)."""
    clauses, params = [where], {name: value for name, value in bounds.items() if value is not None}
    clauses += [f"{column} >= :{low}"] if low in params else []
    clauses += [f"{column} < :{high}"] if high in params else []
    return _IDS + " AND ".join(clauses), params


def _one_of(column: str, values: Sequence[Any]) -> FilterQuery:
    """`column` equal to one of `values`, in chunks that stay under every backend's parameter limit."""
    statements = []
    for start in range(0, len(values), _LIST_CHUNK):
        chunk = values[start : start + _LIST_CHUNK]
        marks = ", ".join(f":v{n}" for n in range(len(chunk)))
        statements.append((_IDS + f"{column} IN ({marks})", {f"v{n}": value for n, value in enumerate(chunk)}))
    return FilterQuery(tuple(statements))


def with_cameras(names: Sequence[str]) -> FilterQuery:
    """Images whose stored camera name is one of `names` (from `CAMERA_NAMES`)."""
    return _one_of("camera", names)


def with_extensions(extensions: Sequence[str]) -> FilterQuery:
    """Images whose stored extension is one of `extensions` (as `normal_extension` gives them)."""
    return _one_of("extension", extensions)


def with_orientation(orientation: str) -> FilterQuery:
    return _one_of("orientation", [orientation])


def at_least(dimension: str, pixels: int) -> FilterQuery:
    """Images at least `pixels` wide (`dimension` width) or high (height)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"no dimension {dimension!r}: one of {DIMENSIONS}")
    return FilterQuery(((_IDS + f"{dimension} >= :pixels", {"pixels": int(pixels)}),))


# --- the write side ------------------------------------------------------------------------------


def normal_extension(name: str) -> str | None:
    """`JPEG`, `.jpeg`, `jpg` -> `jpg`: lower case, no dot, one name per format (`EXTENSION_SYNONYMS`); None for
    no suffix, or one that is too long or not text (a file name that is not valid UTF-8)."""
    suffix = name.strip().lower().lstrip(".")
    if not suffix or len(suffix) > EXTENSION_MAX_CHARS or not suffix.isprintable():
        return None
    try:
        suffix.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return EXTENSION_SYNONYMS.get(suffix, suffix)


def extension_of(path: str) -> str | None:
    """The stored extension of the file at `path`."""
    suffix = os.path.splitext(os.path.basename(path))[1]
    return normal_extension(suffix) if suffix else None


def camera_name(make: str | None, model: str | None) -> str | None:
    """One name for make and model, as people say it: `Apple` + `iPhone 12` -> `Apple iPhone 12`, `Canon` +
    `Canon EOS R5` -> `Canon EOS R5` (a model that starts with its make is not doubled); None for neither."""
    make, model = (make or "").strip(), (model or "").strip()
    if model.casefold().startswith(make.casefold()):
        return model or None
    return f"{make} {model}".strip()


def orientation_of(width: int | None, height: int | None) -> str | None:
    if not width or not height:
        return None
    return "landscape" if width > height else "portrait" if width < height else "square"


FILTER_COLUMNS = ("extension", "camera", "orientation")
"""The images table's columns derived for the filters, which no record carries (`filter_columns` fills them)."""


def filter_columns(
    path: str, width: int | None, height: int | None, make: str | None, model: str | None
) -> dict[str, Any]:
    """The filter columns of an image row, derived from its path and facts: every write of those fills them."""
    return {
        "extension": extension_of(path),
        "camera": camera_name(make, model),
        "orientation": orientation_of(width, height),
    }


def sqlite_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params` as the stdlib sqlite3 binds them for a SQLAlchemy SQLite table: datetimes as SQLAlchemy
    stores a DateTime there (`YYYY-MM-DD HH:MM:SS.ffffff`, which compares as text)."""
    return {
        name: value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value
        for name, value in params.items()
    }
