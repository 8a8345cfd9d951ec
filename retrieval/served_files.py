"""The file of an image id, handed out only while it is safe: what a server serves for `/api/images/ID`.

The only input is an integer id; nothing a client sends is ever joined to a path. The id's stored record
names the file, and the file is served only if it still is the file that was indexed (the size and mtime the
record holds), is a regular file (not a FIFO, device or folder), and, with every symbolic link resolved, lies
inside one of the library's recorded roots (resolved too). So a photo replaced by a link to /etc/passwd, a
folder inside a root swapped for a link leading out of it, or a file of a root that was forgotten are never
read, whatever their names.

Images indexed before the library recorded its roots (migration 0003) have no recorded root around them: for
those the image's own folder, as recorded, is its root, as the indexer treated it then. The resolved file must
still lie inside that folder's resolved path and match the recorded size and mtime to the nanosecond.

What is checked is the path; a file swapped between this check and the caller's read is a race this module
cannot close for a caller that opens the path itself. `read_served` closes it for callers that read the bytes
here (the thumbnails): it refuses a link at the last component and checks the size and content hash of what
it read (a thumbnail is named by that hash).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.errors import FileNotServedError, UnknownImageError, UnreadableImageError
from retrieval.fileread import file_kind, read_regular_file
from retrieval.storage.path_range import folder_prefix
from retrieval.storage.records import ImageRecord

if TYPE_CHECKING:
    from retrieval.library import Library

__all__ = ["checked_file", "read_served", "served_path", "served_record"]

_LARGEST_ID = 2**63 - 1  # the store's ids are 64-bit integers; a larger one cannot even be asked for


def served_path(library: Library, image_id: int) -> tuple[ImageRecord, Path]:
    """The record of `image_id` and the resolved path of its file, once the file has passed every check
    (see the module's docstring). Raises `UnknownImageError` when there is no such image (or it is a failed
    row) and `FileNotServedError` when its file may not be served."""
    record = served_record(library, image_id)
    return record, checked_file(record, library.store.root_paths())


def served_record(library: Library, image_id: int) -> ImageRecord:
    """The stored record of `image_id`, an image that was indexed (it has a vector); `UnknownImageError` else.

    Reads go through the full store (SQLAlchemy, a connection per call), which threads may share."""
    if isinstance(image_id, bool) or not isinstance(image_id, int) or not 0 < image_id <= _LARGEST_ID:
        raise UnknownImageError(f"no image has the id {image_id!r} (`image_id`)", parameters=("image_id",))
    record = library.store.rows_by_ids([image_id]).get(image_id)
    if record is None:
        raise UnknownImageError(f"no image has the id {image_id} (`image_id`)", parameters=("image_id",))
    if not record.has_vector:
        reason = f": {record.error}" if record.error else ""
        raise UnknownImageError(
            f"image {image_id} ({record.path}) could not be read when it was indexed{reason}",
            parameters=("image_id",),
        )
    return record


def checked_file(record: ImageRecord, roots: Sequence[str]) -> Path:
    """The resolved path of `record`'s file when it may be served, given the library's recorded `roots`;
    `FileNotServedError` saying why not otherwise."""
    try:
        real = Path(os.path.realpath(record.path, strict=True))
        info = os.stat(real)
    except OSError as exc:
        raise _not_served(record, f"it is gone ({exc.strerror or exc}); re-index its folder") from exc
    allowed = _allowed_roots(record.path, roots)
    if not any(_within(str(real), root) for root in allowed):
        raise _not_served(record, f"it leads to {real}, outside the library's roots ({', '.join(allowed)})")
    if not stat.S_ISREG(info.st_mode):
        raise _not_served(record, f"it is not a regular file but a {file_kind(info.st_mode)}")
    if (info.st_size, info.st_mtime_ns) != (record.size, record.mtime_ns):
        raise _not_served(record, "it changed since it was indexed; re-index its folder")
    return real


def read_served(record: ImageRecord, path: Path) -> bytes:
    """The bytes of the checked file at `path` (from `checked_file`): a regular file, not a link, of the
    size and content hash `record` holds (the indexer's SHA-256); `FileNotServedError` when it was swapped or
    changed since the check, or since indexing with its size and mtime kept."""
    try:
        data = read_regular_file(str(path), follow_symlinks=False)
    except UnreadableImageError as exc:
        raise _not_served(record, exc.reason) from exc
    if len(data) != record.size or (
        record.content_hash is not None and hashlib.sha256(data).hexdigest() != record.content_hash
    ):
        raise _not_served(record, "it changed since it was indexed; re-index its folder")
    return data


def _allowed_roots(path: str, roots: Sequence[str]) -> list[str]:
    """The resolved recorded roots that hold `path`; for an image indexed before roots were recorded (none
    holds it), its own folder."""
    holding = [root for root in roots if _within(path, root)] or [os.path.dirname(path)]
    return [os.path.realpath(root) for root in holding]


def _within(path: str, folder: str) -> bool:
    return path.startswith(folder_prefix(folder))


def _not_served(record: ImageRecord, why: str) -> FileNotServedError:
    return FileNotServedError(f"the file of image {record.id} ({record.path}) is not served: {why}")
