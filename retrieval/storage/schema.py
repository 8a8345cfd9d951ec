"""The store's tables as typed SQLAlchemy 2.0 models. Their history lives in `migrations.py`."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

HAS_VECTOR_CHECK = "(vector IS NOT NULL) = has_vector"
"""`has_vector` says whether the row has a vector, always: counts read it from an index, not the blobs."""


class FsPath(TypeDecorator[str]):
    """A file path kept as the bytes the OS uses (`os.fsencode`) and given back as the same `str`
    (`os.fsdecode`): names that are not valid UTF-8 survive, and paths compare bytewise on every backend."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else os.fsdecode(bytes(value))


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One file under an indexed root: what we learned about it, and its vector unless it failed."""

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint(HAS_VECTOR_CHECK, name="ck_images_has_vector"),
        Index("ix_images_vector_size", "has_vector", "size"),
        Index("ix_images_vector_taken_at", "has_vector", "taken_at"),
        # filters branch (migration 0004): what the search filters read (`filter_queries.py`)
        Index("ix_images_date", "taken_at", "mtime_ns", "has_vector"),
        Index("ix_images_camera", "camera", "has_vector"),
        Index("ix_images_extension", "extension", "has_vector"),
        Index("ix_images_orientation", "orientation", "has_vector"),
        Index("ix_images_width", "width", "has_vector"),
        Index("ix_images_height", "height", "has_vector"),
        {"sqlite_autoincrement": True},  # ids are FAISS ids: never reuse a deleted one
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    """64-bit everywhere: SQLite's INTEGER PRIMARY KEY is, and PostgreSQL's BIGINT (migration 0005)."""
    path: Mapped[str] = mapped_column(FsPath, unique=True, index=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)  # indexed first in ix_images_date
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    """float16 little-endian (`retrieval.storage.vectors`)."""
    has_vector: Mapped[bool] = mapped_column(Boolean, default=False)
    model_key: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    # filters branch (migration 0004): derived from the path and facts by `filter_queries.filter_columns`
    extension: Mapped[str | None] = mapped_column(String(32))
    camera: Mapped[str | None] = mapped_column(String(260))
    orientation: Mapped[str | None] = mapped_column(String(16))


class MetaRow(Base):
    """Library-wide facts: the model spec and identity, the embedding dimension."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StateRow(Base):
    """A single row whose `generation` grows with every committed change to the vectors."""

    __tablename__ = "library_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


# --- rootswatch branch: the folders indexed as roots
class RootRow(Base):
    """A folder given to an index run (not one under another recorded root): when it was indexed, how many
    images and unreadable files the library holds under it, and the scan options it was last indexed with."""

    __tablename__ = "roots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    first_indexed_at: Mapped[datetime] = mapped_column(DateTime)
    last_indexed_at: Mapped[datetime] = mapped_column(DateTime)
    images: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[str] = mapped_column(Text, default="{}")
    """The scan options of the last run as JSON (include_hidden, follow_symlinks, exclude)."""


# --- end rootswatch branch


class MigrationRow(Base):
    __tablename__ = "schema_migrations"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime)
