"""Plain value objects that cross module boundaries (no SQLAlchemy session attached)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class FileMetadata:
    """What the indexer learned about one file, ready to be stored."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One stored image row, as the search and info commands see it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    error: str | None
    indexed_at: datetime


@dataclass(frozen=True)
class LibraryStats:
    indexed: int
    failed: int
    total_bytes: int
    first_taken: datetime | None
    last_taken: datetime | None
    generation: int
    failures: list[tuple[str, str]] = field(default_factory=list)
