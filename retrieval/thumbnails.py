"""Thumbnails of a library's images: made once from the file, kept on disk, checked whenever read.

A thumbnail is a JPEG whose longest side is `THUMBNAIL_SIZE` (EXIF orientation applied, transparency on
white), made by the indexer's safe decoder (bounded reads, pixel limits, JPEG draft mode, a memory budget
shared by the cache's threads) from a file that `served_files` allows. It lives under
`<library>/thumbnails/<aa>/<content hash>-<size>.jpg` (folders 0700, files 0600, written atomically), so it
is found again after re-indexing, and after the photo moved, as long as its content is the same.

Each file carries its own check: a JPEG comment, right after the header, with the format version and the
SHA-256 of every other byte. A read that finds a truncated, damaged or outdated file makes it again. Two
threads or processes may make the same thumbnail at once: each writes a temporary file and renames it into
place, so a reader sees one whole file or the other.

A library folder that cannot be written (a read-only library) keeps its thumbnails in the per-user cache
folder instead (`config.default_thumbnail_cache_dir`, shared by libraries: a thumbnail is named by its
content), and where that cannot be written either, in a private temporary folder kept for the cache's life.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from retrieval.atomic import write_atomic
from retrieval.config import (
    DEFAULT_DECODE_WORKERS,
    THUMBNAIL_FOLDER,
    THUMBNAIL_FORMAT_VERSION,
    THUMBNAIL_MAX_SIZE,
    THUMBNAIL_MEMORY_BUDGET,
    THUMBNAIL_MIN_SIZE,
    THUMBNAIL_QUALITY,
    THUMBNAIL_SIZE,
    default_thumbnail_cache_dir,
)
from retrieval.decode import decode_image
from retrieval.errors import (
    ClipsearchError,
    FileNotServedError,
    InvalidQueryError,
    LibraryReadOnlyError,
    ThumbnailWriteError,
    UnreadableImageError,
)
from retrieval.membudget import MemoryBudget
from retrieval.served_files import checked_file, read_served, served_record
from retrieval.storage.opening import private_folder
from retrieval.storage.records import ImageRecord

if TYPE_CHECKING:
    from retrieval.library import Library
    from retrieval.storage.store import Store

__all__ = ["PrepareReport", "ThumbnailCache"]

_HASH = re.compile(r"[0-9a-f]{16,128}")
_NAME = re.compile(r"([0-9a-f]{16,128})-(\d+)\.jpg")
_STAMP = re.compile(rb"clipsearch-thumbnail v(\d+) sha256=([0-9a-f]{64})")
_SOI, _APP0, _COM = b"\xff\xd8", b"\xff\xe0", b"\xff\xfe"
_LOCKS = 64  # making one thumbnail at a time per name, through a fixed set of locks


@dataclass
class PrepareReport:
    """What `ThumbnailCache.prepare` did: thumbnails made, found already cached, and the ids that failed."""

    made: int = 0
    cached: int = 0
    failed: dict[int, str] = field(default_factory=dict)


class ThumbnailCache:
    """The thumbnails of the library in `library_dir`. Files are checked against the library's roots
    (`served_files`) through `library` when given, else through a `Library` the cache opens on first need and
    closes in `close`. Threads may share one cache."""

    def __init__(
        self,
        library_dir: Path,
        *,
        library: Library | None = None,
        fallback_dir: Path | None = None,
        memory_budget: int = THUMBNAIL_MEMORY_BUDGET,
    ) -> None:
        self.folder = Path(library_dir) / THUMBNAIL_FOLDER
        self._library_dir, self._library, self._owned = Path(library_dir), library, False
        self._fallback = fallback_dir
        self._temporary: Path | None = None
        self._unwritable: set[Path] = set()
        self._budget = MemoryBudget(memory_budget)
        self._guard = threading.Lock()
        self._locks = [threading.Lock() for _ in range(_LOCKS)]

    def close(self) -> None:
        """Close the library the cache opened itself, and remove its temporary folder, if it made one."""
        with self._guard:
            if self._owned and self._library is not None:
                self._library.close()
                self._library, self._owned = None, False
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
                self._temporary = None

    def __enter__(self) -> ThumbnailCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the public calls ------------------------------------------------------------------------
    def path_for(self, record: ImageRecord, size: int = THUMBNAIL_SIZE) -> Path:
        """The path of the checked thumbnail of `record` (from `served_files.served_path`) at `size`, made
        now if it is missing or damaged. Raises `FileNotServedError` when the file may not be served or cannot
        be decoded, `InvalidQueryError` for a `size` out of range."""
        return self._ensure(record, size)[0]

    def etag(self, record: ImageRecord, size: int = THUMBNAIL_SIZE) -> str:
        """The HTTP entity tag of `record`'s thumbnail at `size`, known without making it: it changes only
        when the image's content, the size or the way thumbnails are made does."""
        identity = _valid_hash(record.content_hash) or f"{record.size}-{record.mtime_ns}-{record.id}"
        return f'"t{THUMBNAIL_FORMAT_VERSION}-{identity[:32]}-{size}"'

    def prepare(
        self, ids: Iterable[int], *, size: int = THUMBNAIL_SIZE, workers: int = DEFAULT_DECODE_WORKERS
    ) -> PrepareReport:
        """Make the missing thumbnails of `ids` ahead of time in `workers` threads (a server may call this in
        the background). An id whose file cannot be served is counted in `failed` with the reason."""
        _check_size(size)
        report = PrepareReport()
        library = self._open_library()

        def one(image_id: int) -> None:
            try:
                made = self._ensure(served_record(library, image_id), size)[1]
            except ClipsearchError as exc:
                report.failed[image_id] = str(exc)
                return
            with self._guard:
                report.made += made
                report.cached += not made

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(one, ids))
        return report

    def prune(self, store: Store) -> int:
        """Remove the thumbnails in the library's folder whose content no image in `store` has any more (and
        those an older clipsearch made); returns how many. The shared per-user folder is left alone."""
        if not self.folder.is_dir():
            return 0
        live = _stored_hashes(store)
        removed = 0
        for path in self.folder.glob("*/*.jpg"):
            parsed = _NAME.fullmatch(path.name)
            if parsed is None:
                continue
            if parsed.group(1) not in live or not _stamp_current(path):
                _remove(path)
                removed += 1
        return removed

    # --- making and finding ----------------------------------------------------------------------
    def _ensure(self, record: ImageRecord, size: int) -> tuple[Path, bool]:
        """(the thumbnail's path, whether it was made now)."""
        _check_size(size)
        known = _valid_hash(record.content_hash)
        data = None if known else self._read_source(record)  # no usable hash: the bytes name it
        name = f"{known or hashlib.sha256(data or b'').hexdigest()}-{size}.jpg"
        found = self._find(name)
        if found is not None:
            return found, False
        with self._locks[hash(name) % _LOCKS]:
            found = self._find(name)  # another thread may have made it meanwhile
            if found is not None:
                return found, False
            thumbnail = self._make(record, size, data or self._read_source(record))
            return self._store(name, thumbnail), True

    def _find(self, name: str) -> Path | None:
        for folder in self._folders():
            candidate = folder / name[:2] / name
            if _whole(candidate):
                return candidate
        return None

    def _folders(self) -> Iterator[Path]:
        """Where thumbnails may be, in the order they are looked for and written."""
        yield self.folder
        yield self._fallback or default_thumbnail_cache_dir()
        if self._temporary is not None:
            yield self._temporary

    def _store(self, name: str, data: bytes) -> Path:
        """Write `data` as `name` in the first folder that can be written: the library's, the per-user one,
        else a private temporary folder made now for this cache."""
        failure: OSError | None = None
        for folder in [*self._folders(), None]:
            if folder is None:
                with self._guard:
                    if self._temporary is not None:
                        break  # made before, and it failed too
                    self._temporary = folder = Path(tempfile.mkdtemp(prefix="clipsearch-thumbnails-"))  # 0700
            if folder in self._unwritable:
                continue
            target = folder / name[:2] / name
            try:
                private_folder(folder)  # 0700 itself, not only the <aa> folder inside
                private_folder(target.parent)
                write_atomic(target, data, private=True)
            except OSError as exc:
                self._unwritable.add(folder)
                failure = exc
                continue
            return target
        raise ThumbnailWriteError(f"no folder can hold the thumbnail {name}: the last one tried says {failure}")

    def _read_source(self, record: ImageRecord) -> bytes:
        library = self._open_library()
        return read_served(record, checked_file(record, library.store.root_paths()))

    def _make(self, record: ImageRecord, size: int, data: bytes) -> bytes:
        """The stamped JPEG thumbnail of the image in `data`."""
        try:
            decoded = decode_image(data, record.path, min_side=_shortest_side(record, size), budget=self._budget)
        except UnreadableImageError as exc:
            raise FileNotServedError(
                f"the file of image {record.id} ({record.path}) cannot be decoded: {exc.reason}"
            ) from exc
        image = _fit(decoded.image, record, size)
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
        return _stamped(encoded.getvalue())

    def _open_library(self) -> Library:
        with self._guard:
            if self._library is None:
                from retrieval.library import Library

                self._library, self._owned = Library(self._library_dir), True
            return self._library


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not THUMBNAIL_MIN_SIZE <= size <= THUMBNAIL_MAX_SIZE:
        raise InvalidQueryError(
            f"a thumbnail's `size` must be a whole number of pixels from {THUMBNAIL_MIN_SIZE} to "
            f"{THUMBNAIL_MAX_SIZE}, not {size!r}",
            parameters=("size",),
        )


def _valid_hash(content_hash: str | None) -> str | None:
    """The stored content hash when it is one (lowercase hex): only such a string becomes part of a path."""
    return content_hash if content_hash is not None and _HASH.fullmatch(content_hash) else None


def _shortest_side(record: ImageRecord, size: int) -> int:
    """The shortest side the decoder must keep so that the longest comes out at `size` (or the original's)."""
    if not record.width or not record.height:
        return size
    return max(1, math.ceil(size * min(record.width, record.height) / max(record.width, record.height)))


def _fit(image: Image.Image, record: ImageRecord, size: int) -> Image.Image:
    """`image` (the decoder's, reduced by an integer factor) scaled so its longest side is `size`, with the
    proportions of the original (`record`'s size: a reduced panorama's rounding would otherwise show)."""
    width, height = record.width or image.width, record.height or image.height
    scale = min(1.0, size / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.width < target[0] or image.height < target[1]:  # a record whose size is off: keep the image's shape
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        return image
    return image if image.size == target else image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _stamped(jpeg: bytes) -> bytes:
    """`jpeg` with a comment segment after its header (SOI, and APP0 when there is one) holding the format
    version and the SHA-256 of every other byte."""
    cut = 2
    if jpeg[2:4] == _APP0:
        cut = 4 + struct.unpack(">H", jpeg[4:6])[0]
    head, tail = jpeg[:cut], jpeg[cut:]
    digest = hashlib.sha256(head + tail).hexdigest()
    comment = f"clipsearch-thumbnail v{THUMBNAIL_FORMAT_VERSION} sha256={digest}".encode()
    return head + _COM + struct.pack(">H", len(comment) + 2) + comment + tail


def _stamp(data: bytes) -> tuple[int, bool] | None:
    """(format version, whether the digest matches) of a stamped thumbnail's bytes; None if unstamped."""
    if data[:2] != _SOI:
        return None
    cut = 4 + struct.unpack(">H", data[4:6])[0] if data[2:4] == _APP0 and len(data) >= 6 else 2
    if data[cut : cut + 2] != _COM or len(data) < cut + 4:
        return None
    end = cut + 2 + struct.unpack(">H", data[cut + 2 : cut + 4])[0]
    stamp = _STAMP.fullmatch(data[cut + 4 : end])
    if stamp is None:
        return None
    whole = hashlib.sha256(data[:cut] + data[end:]).hexdigest() == stamp.group(2).decode()
    return int(stamp.group(1)), whole


def _whole(path: Path) -> bool:
    """`path` is a thumbnail of the current format, every byte as written."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return _stamp(data) == (THUMBNAIL_FORMAT_VERSION, True)


def _stamp_current(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    version = re.search(rb"clipsearch-thumbnail v(\d+) ", head)
    return version is not None and int(version.group(1)) == THUMBNAIL_FORMAT_VERSION


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except PermissionError as exc:
        raise LibraryReadOnlyError(f"cannot prune the thumbnails in {path.parent.parent}: {exc.strerror}") from exc


def _stored_hashes(store: Store) -> set[str]:
    """Every content hash the store holds (SQLAlchemy: pruning is maintenance, never on the query path)."""
    import sqlalchemy as sa

    from retrieval.storage.schema import ImageRow

    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(ImageRow.content_hash).distinct().where(ImageRow.content_hash.is_not(None)))
        return {str(value) for (value,) in rows}
