"""Library roots: which folders were indexed as roots, listing them, and forgetting a folder's images.

A run's folder is recorded as a root unless it lies under a recorded root: then it is a *subfolder run*,
which refreshes that part of the root and nothing else. Its rule for stored images it does not find is
stricter than a root's: one is forgotten only when its file is gone from disk (deleted, or moved away), never
because this run's options leave it out (hidden, excluded, reached through a link), since the root was
indexed with its own options and still mirrors them. Re-indexing the root applies the root's rule again,
everywhere under it. A root given to a run above recorded roots absorbs them.

`list_roots` counts each root's images live. The counts stored in the table are a snapshot taken by the last
index run on the root (or under it) and by `forget_folder`; `watch` batches leave them alone, so that a batch
costs nothing in proportion to the size of its root.

Roots are not backfilled for libraries made before roots were recorded (the image paths cannot tell one
root from several siblings): such a library records each root at its next index run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from indexer.scan import Plan, ScanOptions
from retrieval.errors import UnknownFolderError
from retrieval.library import Library
from retrieval.storage import roots as table
from retrieval.storage.roots import RootRecord, within
from retrieval.storage.store import Store

__all__ = [
    "ForgetReport",
    "RootRecord",
    "RootsListing",
    "enclosing_roots",
    "forget_folder",
    "keep_present",
    "list_roots",
    "record_run",
]


@dataclass(frozen=True)
class RootsListing:
    roots: list[RootRecord]
    unrooted: int
    """Images (with a vector or failed) under no recorded root: indexed before roots were recorded."""


@dataclass
class ForgetReport:
    folder: str
    images: int = 0
    failed: int = 0
    roots: list[str] = field(default_factory=list)
    """The recorded roots dropped (the folder itself, or roots under it)."""
    dry_run: bool = False


def options_json(options: ScanOptions) -> str:
    recorded = asdict(options)
    recorded.pop("extensions")
    recorded["exclude"] = list(options.exclude)
    return json.dumps(recorded, sort_keys=True)


def enclosing_roots(store: Store, folders: list[str]) -> dict[str, str]:
    """For each of `folders` that lies strictly under a recorded root, that root (subfolder runs)."""
    recorded = store.root_paths()
    found = {}
    for folder in folders:
        above = [root for root in recorded if root != folder and within(folder, root)]
        if above:
            found[folder] = min(above, key=len)
    return found


def keep_present(plan: Plan) -> Plan:
    """A subfolder run's plan: forget only the stored images whose file is gone from disk."""
    plan.gone = [state for state in plan.gone if not os.path.lexists(state.path)]
    return plan


def record_run(store: Store, folders: list[str], enclosing: dict[str, str], options: ScanOptions) -> None:
    """After a run: record its roots (with `options`) and recount the roots its subfolder runs refreshed."""
    with store.writer() as writer:
        for folder in folders:
            if folder in enclosing:
                table.refresh_roots_holding(writer.session, folder)
            else:
                table.record_root(writer.session, folder, options_json(options))


def list_roots(library: Library) -> RootsListing:
    store = library.store
    recorded = store.roots()
    stats = store.stats(failure_limit=0)
    total = stats.indexed + stats.failed
    rooted = sum(root.images + root.failed for root in recorded)
    return RootsListing(recorded, total - rooted)


def forget_folder(library: Library, folder: str, *, dry_run: bool = False) -> ForgetReport:
    """Remove every image under `folder` from the library: rows and vectors in one transaction (the generation
    moves on), then the FAISS file. `folder` may be a recorded root (it is no longer recorded), a folder under
    one (its images go; the root stays and would find them again at its next run unless they are excluded), or
    any folder holding indexed images; it need not exist on disk. Anything else raises `UnknownFolderError`.
    With `dry_run`, says what would be removed and changes nothing."""
    path = os.path.abspath(os.path.expanduser(folder))
    store = library.store
    if dry_run:
        return _checked(store.root_paths(), path, store.folder_contents(path), dry_run=True)
    with library.writer_lock():
        index = library.load_index(gpu="never")
        with store.writer() as writer:
            held = table.contents(writer.session, path)
            report = _checked(table.root_paths(writer.session), path, held, dry_run=False)
            report.roots = table.forget_roots(writer.session, path)
            writer.delete_images(held.ids)
            table.refresh_roots_holding(writer.session, path)
        index.remove(held.vector_ids)
        library.save_index(index, store.generation())
    return report


def _checked(recorded: list[str], path: str, held: table.FolderContents, *, dry_run: bool) -> ForgetReport:
    """The report for forgetting `path`, or `UnknownFolderError` when there is nothing to forget."""
    dropped = [root for root in recorded if within(root, path)]
    if not held.ids and not dropped:
        known = ", ".join(recorded) if recorded else "none recorded yet"
        reason = "is not an indexed root and the library holds no image under it"
        raise UnknownFolderError(f"{path} {reason} (roots: {known}): nothing to forget")
    return ForgetReport(path, held.images, held.failed, dropped, dry_run)
