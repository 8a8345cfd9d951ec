"""Walk the roots and compare the disk with the store: what is new, changed, unchanged or gone.

Only `stat` is used here; no file is read. A folder that cannot be listed is reported, and nothing
stored under it is treated as gone (an unmounted or unreadable folder must not empty the library).

Only regular files are listed: a FIFO, socket or device named like an image is skipped with its reason.
Symbolic links are not followed unless `follow_symlinks` is set: a link inside the roots leads to files
that are indexed under their own path anyway, and a link leaving them could put files the user never chose
(another user's photos, a private file renamed .jpg) into the library; skipped links are counted. Each
folder is walked once, known by (st_dev, st_ino), so a link loop or a second link to a folder ends there.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from retrieval.decode import IMAGE_EXTENSIONS
from retrieval.errors import IndexRootError
from retrieval.fileread import file_kind
from retrieval.storage.records import ImageRecord
from retrieval.storage.store import folder_prefix


@dataclass(frozen=True)
class ScanOptions:
    include_hidden: bool = False
    exclude: tuple[str, ...] = ()
    """Glob patterns (fnmatch: `*` also matches `/`) matched against each file's and folder's absolute
    path, its path relative to its root, and its name: `*/thumbs/*`, `raw/*`, `*.tmp.jpg`, `thumbs`."""
    follow_symlinks: bool = False
    """Follow symbolic links to files and folders, even ones that lead outside the root."""
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
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Image-named paths left out on purpose, with the reason: FIFOs, sockets, devices, folders seen before."""
    links_skipped: int = 0
    """Symbolic links to folders or image-named files not followed (without `follow_symlinks`)."""


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
    return fold_paths(absolute)


def _excluded(path: str, root: str, patterns: tuple[str, ...], *, folder: bool = False) -> bool:
    """A folder is tried with a trailing separator too, so `*/thumbs/*` prunes the folder itself."""
    candidates = [path, os.path.relpath(path, root), os.path.basename(path)]
    if folder:
        candidates += [candidate + os.sep for candidate in candidates[:2]]
    return any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates for pattern in patterns)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan_root(root: str, options: ScanOptions) -> ScanResult:
    """List the regular image files under `root`: each folder's files by name, then its subfolders."""
    result = ScanResult()
    _walk(root, root, options, result, set())
    return result


def _walk(folder: str, root: str, options: ScanOptions, result: ScanResult, visited: set[tuple[int, int]]) -> None:
    pending = [folder]
    while pending:
        pending.extend(reversed(_scan_folder(pending.pop(), root, options, result, visited)))


def scan_paths(paths: Iterable[str], root: str, options: ScanOptions) -> ScanResult:
    """List the image files at or under `paths` (files or folders under `root`) as a scan of `root` would: a
    path that a scan would not reach (hidden, excluded, behind a link not followed, gone) lists nothing."""
    result = ScanResult()
    visited: set[tuple[int, int]] = set()
    for path in fold_paths(paths):
        if not _reachable(path, root, options):
            continue
        try:
            is_link, is_dir = os.path.islink(path), os.path.isdir(path)
            if is_dir and not _excluded(path, root, options.exclude, folder=True):
                if is_link and not options.follow_symlinks:
                    result.links_skipped += 1
                else:
                    _walk(path, root, options, result, visited)
            elif not is_dir and _is_image_name(path, options) and not _excluded(path, root, options.exclude):
                _add_file(path, is_link, lambda: os.stat(path), options, result)  # noqa: B023 (called at once)
        except FileNotFoundError:
            continue  # gone again since the event
        except OSError as exc:
            result.unlisted.append((path, exc.strerror or str(exc)))
    return result


def fold_paths(paths: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated paths, those under another of them left out (the folder covers them)."""
    unique = set(paths)
    return sorted(path for path in unique if not any(_ancestor in unique for _ancestor in _ancestors(path)))


def _ancestors(path: str) -> Iterator[str]:
    parent = os.path.dirname(path)
    while parent != path:
        yield parent
        path, parent = parent, os.path.dirname(parent)


def _reachable(path: str, root: str, options: ScanOptions) -> bool:
    """Whether a walk of `root` gets to `path`: each folder on the way listed and walked into, `path`'s own
    name not hidden (its kind and exclusion are decided where it is listed)."""
    if path != root and not path.startswith(folder_prefix(root)):
        return False
    parts = os.path.relpath(path, root).split(os.sep) if path != root else []
    if not options.include_hidden and any(_is_hidden(part) for part in parts):
        return False
    folder = root
    for part in parts[:-1]:
        folder = os.path.join(folder, part)
        if _excluded(folder, root, options.exclude, folder=True):
            return False
        if os.path.islink(folder) and not options.follow_symlinks:
            return False
    return True


def _is_image_name(path: str, options: ScanOptions) -> bool:
    return os.path.splitext(path)[1].lower() in options.extensions


def _scan_folder(
    folder: str, root: str, options: ScanOptions, result: ScanResult, visited: set[tuple[int, int]]
) -> list[str]:
    """Add `folder`'s image files to `result`; return the subfolders to walk, in name order."""
    subfolders = []
    for entry in _list_once(folder, result, visited):
        if not options.include_hidden and _is_hidden(entry.name):
            continue
        try:
            if entry.is_dir():  # follows a link, to see what it leads to
                if _excluded(entry.path, root, options.exclude, folder=True):
                    continue
                if entry.is_symlink() and not options.follow_symlinks:
                    result.links_skipped += 1
                else:
                    subfolders.append(entry.path)
            elif _is_image_name(entry.name, options) and not _excluded(entry.path, root, options.exclude):
                _add_file(entry.path, entry.is_symlink(), entry.stat, options, result)
        except OSError as exc:
            result.unlisted.append((entry.path, exc.strerror or str(exc)))
    return subfolders


def _list_once(folder: str, result: ScanResult, visited: set[tuple[int, int]]) -> list[os.DirEntry[str]]:
    """`folder`'s entries sorted by name, or none when it cannot be listed or was listed before."""
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:
            result.skipped.append((folder, "folder already scanned (a symbolic link loop or a second link to it)"))
            return []
        visited.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        result.unlisted.append((str(exc.filename or folder), exc.strerror or str(exc)))
        return []


def _add_file(
    path: str, is_link: bool, stat_of: Callable[[], os.stat_result], options: ScanOptions, result: ScanResult
) -> None:
    """List a regular file (through a link only with `follow_symlinks`); skip anything else, saying why."""
    if is_link and not options.follow_symlinks:
        result.links_skipped += 1
        return
    info = stat_of()
    if stat.S_ISREG(info.st_mode):
        result.files.append(DiskFile(path, info.st_size, info.st_mtime_ns))
    else:
        result.skipped.append((path, f"not a regular file ({file_kind(info.st_mode)})"))


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
