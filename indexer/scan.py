"""Walk the roots and compare the disk with the store: what is new, changed, unchanged or gone.

Only `stat` is used here; no file is read. A folder that cannot be listed is reported, and nothing
stored under it is treated as gone (an unmounted or unreadable folder must not empty the library).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from retrieval.decode import IMAGE_EXTENSIONS
from retrieval.errors import IndexRootError
from retrieval.storage.records import ImageRecord
from retrieval.storage.store import folder_prefix


@dataclass(frozen=True)
class ScanOptions:
    include_hidden: bool = False
    exclude: tuple[str, ...] = ()
    """Glob patterns (fnmatch: `*` also matches `/`) matched against each file's and folder's absolute
    path, its path relative to its root, and its name: `*/thumbs/*`, `raw/*`, `*.tmp.jpg`, `thumbs`."""
    follow_symlinks: bool = False
    extensions: frozenset[str] = IMAGE_EXTENSIONS


@dataclass(frozen=True)
class DiskFile:
    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[DiskFile] = field(default_factory=list)
    unlisted: list[tuple[str, str]] = field(default_factory=list)
    """Folders or files that could not be listed or stat'ed, with the reason."""


@dataclass
class Plan:
    new: list[DiskFile] = field(default_factory=list)
    changed: list[tuple[DiskFile, ImageRecord]] = field(default_factory=list)
    unchanged: int = 0
    gone: list[ImageRecord] = field(default_factory=list)


def check_roots(roots: Iterable[str]) -> list[str]:
    """Absolute, de-duplicated roots that exist and are folders; nested roots are folded into parents."""
    absolute = []
    for root in roots:
        path = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(path):
            what = "does not exist" if not os.path.exists(path) else "is not a folder"
            raise IndexRootError(f"cannot index {root}: it {what}")
        absolute.append(path)
    unique = sorted(set(absolute))
    return [r for r in unique if not any(r != p and r.startswith(folder_prefix(p)) for p in unique)]


def _excluded(path: str, root: str, patterns: tuple[str, ...], *, folder: bool = False) -> bool:
    """A folder is tried with a trailing separator too, so `*/thumbs/*` prunes the folder itself."""
    candidates = [path, os.path.relpath(path, root), os.path.basename(path)]
    if folder:
        candidates += [candidate + os.sep for candidate in candidates[:2]]
    return any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates for pattern in patterns)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan_root(root: str, options: ScanOptions) -> ScanResult:
    result = ScanResult()

    def on_error(error: OSError) -> None:
        result.unlisted.append((str(error.filename or root), error.strerror or str(error)))

    for folder, subfolders, names in os.walk(root, onerror=on_error, followlinks=options.follow_symlinks):
        subfolders[:] = sorted(
            d
            for d in subfolders
            if (options.include_hidden or not _is_hidden(d))
            and not _excluded(os.path.join(folder, d), root, options.exclude, folder=True)
        )
        for name in sorted(names):
            if not options.include_hidden and _is_hidden(name):
                continue
            if os.path.splitext(name)[1].lower() not in options.extensions:
                continue
            path = os.path.join(folder, name)
            if _excluded(path, root, options.exclude):
                continue
            try:
                stat = os.stat(path)
            except OSError as exc:
                result.unlisted.append((path, exc.strerror or str(exc)))
                continue
            result.files.append(DiskFile(path, stat.st_size, stat.st_mtime_ns))
    return result


def plan_changes(scan: ScanResult, known: dict[str, ImageRecord], *, retry_errors: bool = False) -> Plan:
    """Sort each file on disk against its stored state. Failed files are retried only when they
    changed, or when `retry_errors` is set."""
    plan = Plan()
    seen = set()
    for disk in scan.files:
        seen.add(disk.path)
        state = known.get(disk.path)
        if state is None:
            plan.new.append(disk)
        elif (state.size, state.mtime_ns) != (disk.size, disk.mtime_ns) or (retry_errors and state.error):
            plan.changed.append((disk, state))
        else:
            plan.unchanged += 1
    blocked = [folder_prefix(path) for path, _ in scan.unlisted]
    for path, state in known.items():
        if path not in seen and not any(path.startswith(prefix) or path + os.sep == prefix for prefix in blocked):
            plan.gone.append(state)
    return plan
