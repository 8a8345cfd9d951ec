"""Plain value objects that cross module boundaries (no SQLAlchemy session attached), and `copy_fields`,
the one way facts move between them by field name (decoded facts -> metadata -> stored row -> record ->
search result), so that a new column is declared, not copied field by field in every place it passes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Record = TypeVar("Record", bound="DataclassInstance")


def copy_fields(cls: type[Record], source: object, **given: Any) -> Record:
    """A `cls` with the `given` values, every other field read from the attribute of the same name of
    `source` (a record, an ORM row, a result row, a decoder's facts)."""
    copied = {item.name: getattr(source, item.name) for item in fields(cls) if item.name not in given}
    return cls(**copied, **given)


@dataclass(frozen=True)
class FileMetadata:
    """What the indexer learned about one file, ready to be stored: its stat and content hash, and the
    facts decoding found (`retrieval.decode.ImageInfo`, whose fields these are by name)."""

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


@dataclass(frozen=True, kw_only=True)
class ImageRecord(FileMetadata):
    """One stored image row without its vector: what was learned about the file and what the store
    keeps beside it. The scan compares its stat with the disk; search and info show its facts."""

    id: int
    has_vector: bool
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
