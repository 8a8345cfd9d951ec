"""Results written into a folder: each file under its own name, as a symbolic link (the default), a hard link
or a copy.

Names are kept. When two results share a name, or the folder already holds a file of that name, the next free
`name (2).jpg`, `name (3).jpg`, ... is used, in the order of the results, so the outcome is deterministic. A
file already in the folder is never overwritten or removed. A name that already holds this very file (a link
to it, the same inode, or a copy with the same bytes) counts as exported, so running the same export again adds
nothing. Names that are not valid UTF-8 are the file system's bytes throughout (surrogate-escaped str).

Why symbolic links by default: they cost no space and no time, and show where each original lives; the folder
is a view of a query. `copy` is for taking the files elsewhere; `hardlink` costs no space either and survives
the original being moved, but works only within one file system.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Any

from retrieval.config import DEFAULT_EXPORT_MODE, EXPORT_MODES
from retrieval.errors import ExportError

WRITTEN = "written"
ALREADY_THERE = "already there"
MISSING = "missing"


@dataclass(frozen=True)
class Exported:
    """What became of one file: `outcome` WRITTEN, ALREADY_THERE (`destination` holds it already) or MISSING
    (the original is gone since it was indexed; `destination` is None)."""

    source: str
    destination: str | None
    outcome: str


@dataclass(frozen=True)
class ExportReport:
    folder: str
    mode: str
    files: list[Exported]

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.files if item.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {outcome: self.count(outcome) for outcome in (WRITTEN, ALREADY_THERE, MISSING)}


def export_files(sources: Iterable[str], folder: str | Path, *, mode: str = DEFAULT_EXPORT_MODE) -> ExportReport:
    """Write each of `sources` (absolute paths, e.g. search results' `path`, in order) into `folder` (made if
    need be) as `mode` says: `link` (symbolic), `hardlink` or `copy`."""
    if mode not in EXPORT_MODES:
        raise ExportError(f"`mode` must be one of {', '.join(EXPORT_MODES)}, not {mode!r}", parameters=("mode",))
    target = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ExportError(f"`folder` {target} exists and is not a folder", parameters=("folder",))
    os.makedirs(target, exist_ok=True)
    return ExportReport(target, mode, [_export_one(source, target, mode) for source in sources])


def _export_one(source: str, folder: str, mode: str) -> Exported:
    if not os.path.isfile(source):
        return Exported(source, None, MISSING)
    stem, ext = os.path.splitext(os.path.basename(source))
    for number in count(1):
        destination = os.path.join(folder, f"{stem}{ext}" if number == 1 else f"{stem} ({number}){ext}")
        if os.path.lexists(destination):
            if _holds(destination, source):
                return Exported(source, destination, ALREADY_THERE)
            continue
        try:
            _write(source, destination, mode)
        except FileExistsError:  # made meanwhile by someone else: never overwritten, try the next name
            continue
        return Exported(source, destination, WRITTEN)
    raise AssertionError("unreachable")  # count() never ends


def _holds(destination: str, source: str) -> bool:
    """Whether `destination` already is `source`: a link to it or the same inode, or a copy of its bytes."""
    try:
        if os.path.samefile(destination, source):
            return True
        regular = os.path.isfile(destination) and not os.path.islink(destination)
        return regular and filecmp.cmp(destination, source, shallow=False)
    except OSError:  # a dangling link or an unreadable file: not ours, left alone
        return False


def _write(source: str, destination: str, mode: str) -> None:
    """Make `destination` (which must not exist: FileExistsError otherwise) as `mode` says."""
    if mode == "link":
        os.symlink(source, destination)
    elif mode == "hardlink":
        try:
            os.link(source, destination)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            raise ExportError(
                f"{source} is on another file system than {os.path.dirname(destination)}, so it cannot be "
                "hard-linked there: export symbolic links or copies instead (`mode`), or into another `folder`",
                parameters=("mode", "folder"),
            ) from exc
    else:
        _copy(source, destination)


def _copy(source: str, destination: str) -> None:
    """A copy of `source` (bytes and times) that appears at `destination` whole or not at all: written under
    a hidden temporary name beside it, then hard-linked into place (which never replaces a file). On a file
    system without hard links (FAT, some network shares) it is written straight to `destination`, created
    exclusively, and removed again if the copy fails."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(destination), prefix=".clipsearch-", suffix=".part")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        shutil.copystat(source, temporary)
        try:
            os.link(temporary, destination)
        except FileExistsError:
            raise
        except OSError:
            _copy_exclusive(temporary, destination)
    finally:
        os.unlink(temporary)


def _copy_exclusive(source: str, destination: str) -> None:
    with open(source, "rb") as reader, open(destination, "xb") as writer:
        try:
            shutil.copyfileobj(reader, writer)
        except BaseException:
            os.unlink(destination)
            raise
    shutil.copystat(source, destination)
