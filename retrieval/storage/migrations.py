"""Ordered, named schema migrations, each applied once and recorded in `schema_migrations`.

Each migration spells out its own DDL with SQLAlchemy Core as it was at that step, so that a fresh
database and an old one reach the same schema through the same steps. Append new steps; never edit one
that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retrieval.storage.filter_queries import filter_columns
from retrieval.storage.schema import HAS_VECTOR_CHECK, FsPath

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


_COPY_CHUNK = 2000
_IMAGES_0001 = sa.table(
    "images",
    *(sa.column(name, sa.Integer) for name in ("id", "width", "height")),
    *(sa.column(name, sa.BigInteger) for name in ("size", "mtime_ns")),
    *(sa.column(name, sa.Text) for name in ("path", "content_hash", "format", "camera_make", "camera_model")),
    *(sa.column(name, sa.Text) for name in ("model_key", "error")),
    *(sa.column(name, sa.DateTime) for name in ("taken_at", "indexed_at")),
    sa.column("vector", sa.LargeBinary),
)
"""The images table as 0001 made it, as far as 0002 reads it."""


def _images_0002(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", FsPath, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("format", sa.String(16)),
        sa.Column("taken_at", sa.DateTime),
        sa.Column("camera_make", sa.String(128)),
        sa.Column("camera_model", sa.String(128)),
        sa.Column("vector", sa.LargeBinary),
        sa.Column("has_vector", sa.Boolean, nullable=False),
        sa.Column("model_key", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("indexed_at", sa.DateTime, nullable=False),
        sa.CheckConstraint(HAS_VECTOR_CHECK, name="ck_images_has_vector"),
        sqlite_autoincrement=True,
    )


def _indexes_0002(images: sa.Table) -> list[sa.Index]:
    return [
        sa.Index("ix_images_path", images.c.path, unique=True),
        sa.Index("ix_images_size", images.c.size),
        sa.Index("ix_images_content_hash", images.c.content_hash),
        sa.Index("ix_images_taken_at", images.c.taken_at),
        sa.Index("ix_images_vector_size", images.c.has_vector, images.c.size),
        sa.Index("ix_images_vector_taken_at", images.c.has_vector, images.c.taken_at),
    ]


def _0002_byte_paths_half_vectors(conn: Connection) -> None:
    """Paths become the OS's bytes (a name that is not UTF-8 could not be stored), vectors float16 (half the
    bytes), and `has_vector` a stored column indexed with size and taken_at, so counts never read the blobs.

    No backend changes a column's type in place portably (SQLite not at all): the table is rebuilt, rows
    copied in id order, and the id counter carried over, so that an id deleted before is never given again."""
    high = _id_high_water(conn)
    staged = _images_0002("images_0002")
    staged.create(conn)
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_IMAGES_0001).where(_IMAGES_0001.c.id > last).order_by(_IMAGES_0001.c.id).limit(_COPY_CHUNK)
        ).all()
        if not rows:
            break
        conn.execute(staged.insert(), [_row_0002(row._asdict()) for row in rows])
        last = rows[-1].id
    conn.exec_driver_sql("DROP TABLE images")
    conn.exec_driver_sql("ALTER TABLE images_0002 RENAME TO images")
    for index in _indexes_0002(_images_0002("images")):
        index.create(conn)
    _set_id_high_water(conn, high)


def _row_0002(row: dict[str, Any]) -> dict[str, Any]:
    vector = row["vector"]
    if vector is not None:
        row["vector"] = np.frombuffer(bytes(vector), dtype="<f4").astype("<f2").tobytes()
    row["has_vector"] = vector is not None
    return row


def _id_high_water(conn: Connection) -> int:
    """The highest id the images table ever gave (deleted ones included, where the backend keeps it)."""
    if conn.dialect.name == "sqlite":
        seq = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'images'").scalar()
    elif conn.dialect.name == "postgresql":
        seq = conn.exec_driver_sql("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM images_id_seq").scalar()
    else:
        seq = None
    return max(int(seq or 0), int(conn.scalar(sa.select(sa.func.max(_IMAGES_0001.c.id))) or 0))


def _set_id_high_water(conn: Connection, high: int) -> None:
    if high <= 0:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'images'")
        conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES ('images', ?)", (high,))
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('images', 'id'), %(high)s)", {"high": high})


# --- rootswatch branch
def _0003_roots(conn: Connection) -> None:
    """The folders indexed as roots. Not backfilled: which folder a run was given cannot be told from the image
    paths (one root or several siblings look the same), so an existing library records each root at its next
    index run; until then its folders are indexed as before, each as its own root."""
    sa.Table(
        "roots",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", FsPath, nullable=False, unique=True),
        sa.Column("first_indexed_at", sa.DateTime, nullable=False),
        sa.Column("last_indexed_at", sa.DateTime, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
    ).create(conn)


# --- end rootswatch branch


def _0005_postgres_bigint_ids(conn: Connection) -> None:
    """Image ids as 64-bit integers on PostgreSQL too. Ids are FAISS ids and never given twice, so they count
    every path a library ever held: its SERIAL column (32-bit) would run out after 2.1 billion, within reach
    of a billion-image library. SQLite's INTEGER PRIMARY KEY is 64-bit already: nothing to do there."""
    if conn.dialect.name != "postgresql":
        return
    sequence = conn.exec_driver_sql("SELECT pg_get_serial_sequence('images', 'id')").scalar()
    conn.exec_driver_sql("ALTER TABLE images ALTER COLUMN id TYPE BIGINT")
    conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} AS BIGINT")


# --- filters branch: 0004 ---------------------------------------------------------------------------
_COLUMNS_0004 = {"extension": sa.String(32), "camera": sa.String(260), "orientation": sa.String(16)}
_IMAGES_0004 = sa.Table(
    "images",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("path", FsPath),
    *(sa.Column(name, sa.Integer) for name in ("width", "height")),
    *(sa.Column(name, sa.String(128)) for name in ("camera_make", "camera_model")),
    *(sa.Column(name, sa.BigInteger) for name in ("mtime_ns",)),
    sa.Column("taken_at", sa.DateTime),
    sa.Column("has_vector", sa.Boolean),
    *(sa.Column(name, kind) for name, kind in _COLUMNS_0004.items()),
)
"""The images table after 0004's new columns, as far as its backfill and indexes name it."""


def _indexes_0004(images: sa.Table) -> list[sa.Index]:
    c = images.c
    return [
        sa.Index("ix_images_date", c.taken_at, c.mtime_ns, c.has_vector),
        sa.Index("ix_images_camera", c.camera, c.has_vector),
        sa.Index("ix_images_extension", c.extension, c.has_vector),
        sa.Index("ix_images_orientation", c.orientation, c.has_vector),
        sa.Index("ix_images_width", c.width, c.has_vector),
        sa.Index("ix_images_height", c.height, c.has_vector),
    ]


def _0004_filter_columns(conn: Connection) -> None:
    """Columns the search filters read through an index (`filter_queries.py`): the file's `extension` (lower
    case, one name per format), the `camera` name (make and model) and the `orientation`, filled here for
    every row and by every write after; indexes on them, on (taken_at, mtime_ns) for dates (which replaces the
    index on taken_at alone: one index less to write) and on the dimensions."""
    for name, kind in _COLUMNS_0004.items():
        conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {name} {kind.compile(dialect=conn.dialect)}")
    images = _IMAGES_0004.c
    read = sa.select(images.id, images.path, images.width, images.height, images.camera_make, images.camera_model)
    write = sa.update(_IMAGES_0004).where(images.id == sa.bindparam("row_id"))  # SET: the columns each row names
    last = 0
    while rows := conn.execute(read.where(images.id > last).order_by(images.id).limit(_COPY_CHUNK)).all():
        conn.execute(write, [{"row_id": row.id, **filter_columns(*row[1:])} for row in rows])
        last = rows[-1].id
    for index in _indexes_0004(_IMAGES_0004):
        index.create(conn)
    sa.Index("ix_images_taken_at", _IMAGES_0004.c.taken_at).drop(conn)  # ix_images_date starts with taken_at


# --- end filters branch


MIGRATIONS: list[Migration] = [
    ("0001_initial", _0001_initial),
    ("0002_byte_paths_half_vectors", _0002_byte_paths_half_vectors),
    ("0003_roots", _0003_roots),
    ("0004_filter_columns", _0004_filter_columns),
    ("0005_postgres_bigint_ids", _0005_postgres_bigint_ids),  # pg branch; 0003 and 0004 are other branches'
]


_RECORDED = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


def is_ours(conn: Connection) -> bool:
    """Whether the database holds a clipsearch store: our `schema_migrations`, with our first step in it."""
    if not sa.inspect(conn).has_table(_RECORDED.name):
        return False
    first = MIGRATIONS[0][0]
    return conn.scalar(sa.select(sa.func.count()).where(_RECORDED.c.name == first)) == 1


def pending_migrations(conn: Connection) -> list[str]:
    """The migrations a store of ours still needs, in order."""
    done = set(conn.execute(sa.select(_RECORDED.c.name)).scalars())
    return [name for name, _ in MIGRATIONS if name not in done]


def apply_migrations(conn: Connection) -> list[str]:
    """Apply every migration not yet recorded, in order, inside the caller's transaction (which must hold
    the write lock from its start, so that two processes never run the same step)."""
    _RECORDED.create(conn, checkfirst=True)
    applied = []
    steps = dict(MIGRATIONS)
    for name in pending_migrations(conn):
        steps[name](conn)
        applied_at = datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, whatever the server's zone
        conn.execute(_RECORDED.insert().values(name=name, applied_at=applied_at))
        applied.append(name)
    return applied
