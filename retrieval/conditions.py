"""The conditions a `SearchFilter` combines, each resolved to the ids of the stored images with vectors that
pass it, through indexed store queries (`retrieval.storage.filter_queries`). Each checks its arguments when
made, so bad input is refused before any search, with a typed error naming the parameter."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from retrieval.config import ORIENTATIONS
from retrieval.dates import DateRange
from retrieval.errors import InvalidQueryError
from retrieval.storage import filter_queries as queries

if TYPE_CHECKING:
    from retrieval.storage.reader import StoreReads as Store


class Condition(Protocol):
    def ids(self, store: Store) -> np.ndarray:
        """The ids of stored images with vectors that pass, as int64 (any order)."""
        ...


def _union(parts: Iterable[np.ndarray]) -> np.ndarray:
    found = list(parts)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Within:
    """Images under any of `folders` (their subfolders included; `trip` does not hold `trip-extra`)."""

    folders: tuple[str | Path, ...]

    def __post_init__(self) -> None:
        if not self.folders:
            raise InvalidQueryError("`within` names no folder", parameters=("within",))

    def ids(self, store: Store) -> np.ndarray:
        return _union(self._under(store, folder) for folder in self.folders)

    @staticmethod
    def _under(store: Store, given: str | Path) -> np.ndarray:
        folder = os.path.abspath(os.path.expanduser(str(given)))
        found = store.ids_under(folder)
        if not len(found) and not os.path.isdir(folder):
            raise InvalidQueryError(
                f"`within` names {folder}, which is not a folder (and no indexed image is under it)",
                parameters=("within",),
            )
        return found


@dataclass(frozen=True)
class Dated:
    """Images dated in `dates`: their EXIF date taken, else their file's modification time (`retrieval.dates`)."""

    dates: DateRange

    def ids(self, store: Store) -> np.ndarray:
        return store.filter_ids(queries.dated(self.dates))


@dataclass(frozen=True)
class Camera:
    """Images whose camera make or model (or "make model") holds `text`, in any case."""

    text: str

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise InvalidQueryError("`camera` is empty: give part of a camera's make or model", parameters=("camera",))

    def ids(self, store: Store) -> np.ndarray:
        wanted = self.text.strip().casefold()
        names = [name for name in store.camera_names() if wanted in name.casefold()]
        return store.filter_ids(queries.with_cameras(names)) if names else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Extension:
    """Images whose file name ends in one of `extensions` (`jpg` or `.JPG`, or `jpg,png`; `jpeg` and `jpg`
    are one)."""

    extensions: tuple[str, ...]

    def __post_init__(self) -> None:
        named = [part for name in self.extensions for part in str(name).split(",") if part.strip()]
        normal = [queries.normal_extension(name) for name in named]
        if not normal or None in normal:
            raise InvalidQueryError(
                f"`extensions` must name file extensions such as jpg or png, not {list(self.extensions)!r}",
                parameters=("extensions",),
            )
        object.__setattr__(self, "extensions", tuple(sorted({name for name in normal if name})))

    def ids(self, store: Store) -> np.ndarray:
        return store.filter_ids(queries.with_extensions(self.extensions))


@dataclass(frozen=True)
class AtLeast:
    """Images at least `pixels` wide (`dimension` "width") or high ("height"), as decoded."""

    dimension: str
    pixels: int

    def __post_init__(self) -> None:
        parameter = f"min_{self.dimension}"
        if self.dimension not in queries.DIMENSIONS:
            raise ValueError(f"no dimension {self.dimension!r}: one of {queries.DIMENSIONS}")
        if isinstance(self.pixels, bool) or not isinstance(self.pixels, int) or self.pixels < 1:
            raise InvalidQueryError(
                f"`{parameter}` must be a whole number of pixels, 1 or more, not {self.pixels!r}",
                parameters=(parameter,),
            )

    def ids(self, store: Store) -> np.ndarray:
        return store.filter_ids(queries.at_least(self.dimension, self.pixels))


@dataclass(frozen=True)
class Orientation:
    """Landscape (wider than high), portrait (higher than wide) or square images."""

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", str(self.name).strip().lower())
        if self.name not in ORIENTATIONS:
            raise InvalidQueryError(
                f"`orientation` must be one of {', '.join(ORIENTATIONS)}, not {self.name!r}",
                parameters=("orientation",),
            )

    def ids(self, store: Store) -> np.ndarray:
        return store.filter_ids(queries.with_orientation(self.name))
