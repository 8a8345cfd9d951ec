"""Ordered, named schema migrations, each applied once and recorded in `schema_migrations`.

Each migration spells out its own DDL with SQLAlchemy Core as it was at that step, so that a fresh
database and an old one reach the same schema through the same steps. Append new steps; never edit one
that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Migration = tuple[str, Callable[[Connection], None]]


def _0001_initial(conn: Connection) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "images",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False, index=True),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), index=True),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("format", sa.String(16)),
        sa.Column("taken_at", sa.DateTime, index=True),
        sa.Column("camera_make", sa.String(128)),
        sa.Column("camera_model", sa.String(128)),
        sa.Column("vector", sa.LargeBinary),
        sa.Column("model_key", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("indexed_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    state = sa.Table(
        "library_state",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    metadata.create_all(conn)
    conn.execute(state.insert().values(id=1, generation=0))


MIGRATIONS: list[Migration] = [
    ("0001_initial", _0001_initial),
]


def apply_migrations(conn: Connection) -> list[str]:
    """Apply every migration not yet recorded, in order, inside the caller's transaction."""
    recorded = sa.Table(
        "schema_migrations",
        sa.MetaData(),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("applied_at", sa.DateTime, nullable=False),
    )
    recorded.create(conn, checkfirst=True)
    done = set(conn.execute(sa.select(recorded.c.name)).scalars())
    applied = []
    for name, step in MIGRATIONS:
        if name not in done:
            step(conn)
            conn.execute(recorded.insert().values(name=name, applied_at=datetime.now(timezone.utc)))
            applied.append(name)
    return applied
