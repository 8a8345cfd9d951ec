"""The `roots` table's queries: which folders were indexed as roots, and what the library holds under a folder.

Each function works inside a session the caller opened (`Store.roots` for reads, `StoreWriter.session` for
writes), so recording a run's roots or forgetting a folder commits together with whatever else that
transaction writes. Paths are compared as byte ranges (`path_range`), as the images' paths are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from retrieval.storage.path_range import folder_prefix, path_bounds
from retrieval.storage.schema import ImageRow, RootRow


@dataclass(frozen=True)
class RootRecord:
    """A recorded root, with what the library holds under it now (`images` with a vector, `failed` unreadable)."""

    path: str
    first_indexed_at: datetime
    last_indexed_at: datetime
    images: int
    failed: int
    options: str


@dataclass(frozen=True)
class FolderContents:
    """The rows under a folder: every id (to delete) and those with a vector (to take out of the FAISS index)."""

    ids: list[int]
    vector_ids: list[int]

    @property
    def images(self) -> int:
        return len(self.vector_ids)

    @property
    def failed(self) -> int:
        return len(self.ids) - len(self.vector_ids)


def under(column: InstrumentedAttribute[Any], folder: str) -> sa.ColumnElement[bool]:
    """`column` (a stored path) is under `folder`: `prefix <= path < successor(prefix)`, bytewise."""
    prefix, upper = path_bounds(folder)
    lower = column >= sa.literal(prefix, sa.LargeBinary)
    return lower if upper is None else sa.and_(lower, column < sa.literal(upper, sa.LargeBinary))


def contents(session: Session, folder: str) -> FolderContents:
    rows = session.execute(sa.select(ImageRow.id, ImageRow.has_vector).where(under(ImageRow.path, folder))).all()
    return FolderContents([int(i) for i, _ in rows], [int(i) for i, has in rows if has])


def root_paths(session: Session) -> list[str]:
    return list(session.scalars(sa.select(RootRow.path).order_by(RootRow.path)))


def list_roots(session: Session) -> list[RootRecord]:
    """Every recorded root by path, with live counts (what `clipsearch roots` shows)."""
    found = []
    for row in session.scalars(sa.select(RootRow).order_by(RootRow.path)):
        held = contents(session, row.path)
        found.append(
            RootRecord(row.path, row.first_indexed_at, row.last_indexed_at, held.images, held.failed, row.options)
        )
    return found


def record_root(session: Session, path: str, options: str) -> None:
    """`path` was indexed as a root now: add it or update it, with its counts and options; recorded roots under
    it are folded into it (it covers them from now on)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    session.execute(sa.delete(RootRow).where(under(RootRow.path, path)))
    row = session.scalars(sa.select(RootRow).where(RootRow.path == path)).first()
    if row is None:
        row = RootRow(path=path, first_indexed_at=now)
        session.add(row)
    row.last_indexed_at, row.options = now, options
    refresh_counts(session, row)


def refresh_counts(session: Session, row: RootRow) -> None:
    held = contents(session, row.path)
    row.images, row.failed = held.images, held.failed
    session.flush()


def refresh_roots_holding(session: Session, folder: str) -> None:
    """Recount the recorded roots at or above `folder`, after images under it were added or removed."""
    for row in session.scalars(sa.select(RootRow)):
        if within(folder, row.path):
            refresh_counts(session, row)


def forget_roots(session: Session, folder: str) -> list[str]:
    """Drop the recorded roots at or under `folder`; returns their paths."""
    doomed = session.scalars(
        sa.select(RootRow.path).where(sa.or_(RootRow.path == folder, under(RootRow.path, folder)))
    ).all()
    if doomed:
        session.execute(sa.delete(RootRow).where(sa.or_(RootRow.path == folder, under(RootRow.path, folder))))
    return list(doomed)


def within(path: str, folder: str) -> bool:
    """`path` is `folder` or under it (both absolute and normalised)."""
    return path == folder or path.startswith(folder_prefix(folder))
