"""A real library to serve files from: Pillow images under a root, indexed with the tiny model, and the
record of each file by name (what tests of `served_files` and `thumbnails` start from)."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.records import ImageRecord


def index(library: Library, encoder: Encoder, root: Path) -> dict[str, ImageRecord]:
    """Index `root` into `library` (one worker: the machine is shared) and return every stored record by file
    name (relative to `root`)."""
    index_folders(library, encoder, [str(root)], workers=1)
    return records(library, root)


def records(library: Library, root: Path) -> dict[str, ImageRecord]:
    states = library.store.file_states_under(str(root))
    return {os.path.relpath(path, root): record for path, record in states.items()}


def same_stat_copy(source: Path, target: Path) -> Path:
    """A copy of `source` at `target` with the same bytes, size and mtime to the nanosecond: a file that only
    the roots check can tell from the indexed one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    info = source.stat()
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    return target
