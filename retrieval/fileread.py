"""Reading a file whole without hanging or over-allocating: regular files only, bounded by their size.

`open()` on a FIFO blocks until a writer comes, and `read()` on /dev/zero never ends, so a FIFO or a device
named like an image (or a symlink to one) could stall or exhaust the indexer. Here a file is opened with
O_NONBLOCK (opening a FIFO then returns at once) and its open descriptor is checked with `fstat`: only a
regular file is read, and only up to the size `fstat` gave, at most `max_bytes`. A file swapped after a
scan is judged by what is actually open, so the check cannot be raced.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from retrieval.config import MAX_FILE_BYTES
from retrieval.errors import UnreadableImageError

__all__ = ["file_kind", "iter_regular_file", "read_regular_file"]

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISLNK, "symbolic link"),
)


def file_kind(mode: int) -> str:
    """What a `st_mode` is, in words: 'regular file', 'FIFO', 'character device', ..."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((name for test, name in _KINDS if test(mode)), "special file")


def read_regular_file(path: str, *, follow_symlinks: bool = True, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The whole content of the regular file `path`, read with one buffer of its size in the usual case.
    Raises `UnreadableImageError` for anything else (see `iter_regular_file`)."""
    return b"".join(iter_regular_file(path, chunk=None, follow_symlinks=follow_symlinks, max_bytes=max_bytes))


def iter_regular_file(
    path: str, *, chunk: int | None, follow_symlinks: bool = True, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[bytes]:
    """Yield the content of the regular file `path` in pieces of at most `chunk` bytes (None: as few
    reads as the system allows). Raises `UnreadableImageError` when it cannot be opened, is not a regular
    file (a FIFO, socket, device or folder), is a symbolic link and `follow_symlinks` is false (its last
    component only), is larger than `max_bytes`, or changed size while being read; never reads more than
    its size at open time plus one byte."""
    flags = _OPEN_FLAGS | (0 if follow_symlinks else _NOFOLLOW)
    try:
        if not follow_symlinks and not _NOFOLLOW and os.path.islink(path):
            raise OSError(errno.ELOOP, "symbolic link")
        descriptor = os.open(path, flags)
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:
            raise UnreadableImageError(path, "cannot read file: symbolic link not followed") from exc
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        size = _checked_size(path, descriptor, max_bytes)
        yield from _bounded_reads(path, descriptor, size, chunk or max(size, 1))
    finally:
        os.close(descriptor)


def _checked_size(path: str, descriptor: int, max_bytes: int) -> int:
    """The open file's size, once it is known to be a regular file no larger than `max_bytes`."""
    try:
        info = os.fstat(descriptor)
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableImageError(path, f"cannot read file: not a regular file ({file_kind(info.st_mode)})")
    if info.st_size > max_bytes:
        raise UnreadableImageError(path, f"file too large: {info.st_size} bytes exceeds limit of {max_bytes}")
    return info.st_size


def _bounded_reads(path: str, descriptor: int, size: int, chunk: int) -> Iterator[bytes]:
    """`size` bytes in reads of at most `chunk`, then one byte more to see that the file did not grow."""
    remaining = size
    try:
        while remaining > 0:
            block = os.read(descriptor, min(chunk, remaining))
            if not block:
                raise UnreadableImageError(
                    path, f"file changed while reading: it shrank from {size} to {size - remaining} bytes"
                )
            remaining -= len(block)
            yield block
        grown = os.read(descriptor, 1)
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if grown:
        raise UnreadableImageError(path, f"file changed while reading: it grew past {size} bytes")
