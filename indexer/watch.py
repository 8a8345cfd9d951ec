"""Keep a library current with folders as their files change (`clipsearch watch`), through watchdog.

A watch starts its observers, then catches up with one `index_folders` run over the roots (what changed while
nobody watched, and anything that happens during the catch-up is seen again afterwards). From then on the
observer thread only notes which paths changed (`Pending`); the watching thread applies them in batches with
`index_paths`, the pipeline's own incremental path: a batch is one call, a moved file or folder (its old path
gone, its new one found in the same batch) keeps its vectors, and the model stays loaded for the whole watch.

When a batch is applied: once no event came for `quiet` seconds, or at least every `max_delay` seconds under a
steady stream of events. Which paths: those that settled, i.e. no event for `quiet` seconds and the same size
and mtime as at their last event, so a file still being written waits (a writer that pauses for longer than
`quiet` gets its file indexed when it looks done, then again when it changes). The two paths of a move go
together.

The writer lock is held only while a batch is applied, so `search` runs at any time and a manual `index` can
run between batches (while it holds the lock the watcher keeps its batch and tries again). `stop` is seen
between batches: the batch in progress is committed first; events not yet applied are found by the next
watch's catch-up scan.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_EVENTS_LOST,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from indexer.pipeline import IndexReport, index_folders, index_paths
from indexer.scan import ScanOptions, check_roots
from retrieval.config import (
    DEFAULT_DECODE_WORKERS,
    WATCH_MAX_DELAY_SECONDS,
    WATCH_QUIET_SECONDS,
    WATCH_TICK_SECONDS,
)
from retrieval.decode import IMAGE_EXTENSIONS
from retrieval.errors import LibraryBusyError, WatchError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.roots import within

Signature = tuple[int, int] | None
"""A path's (size, mtime_ns), or None for a folder or a path that is gone."""


@dataclass(frozen=True)
class WatchSettings:
    quiet: float = WATCH_QUIET_SECONDS
    max_delay: float = WATCH_MAX_DELAY_SECONDS
    tick: float = WATCH_TICK_SECONDS


@dataclass(frozen=True)
class WatchBatch:
    """One applied batch (or the catch-up run, `catch_up`): its root, how many changed paths it covered."""

    root: str
    paths: int
    report: IndexReport
    catch_up: bool = False


def signature(path: str) -> Signature:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return None if os.path.isdir(path) else (info.st_size, info.st_mtime_ns)


@dataclass
class _Entry:
    seen: float
    signature: Signature
    partner: str | None = None


@dataclass
class Pending:
    """The changed paths not yet applied, by root; fed by the observer thread, drained by the watching one."""

    settings: WatchSettings
    _entries: dict[str, dict[str, _Entry]] = field(default_factory=dict)
    _first: float | None = None
    _last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, root: str, path: str, now: float, partner: str | None = None) -> None:
        sig = signature(path)
        with self._lock:
            entries = self._entries.setdefault(root, {})
            entries[path] = _Entry(now, sig, partner)
            self._first = now if self._first is None else self._first
            self._last = now

    def __len__(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._entries.values())

    def take(self, now: float) -> dict[str, list[str]]:
        """The settled paths by root, when a batch is due (no event for `quiet`, or `max_delay` since the first
        pending one); removed from the pending ones. Paths still changing stay, with their new look."""
        with self._lock:
            if self._first is None:
                return {}
            if now - self._last < self.settings.quiet and now - self._first < self.settings.max_delay:
                return {}
            taken = {root: self._settled(entries, now) for root, entries in self._entries.items()}
            for root, paths in taken.items():
                for path in paths:
                    del self._entries[root][path]
            self._entries = {root: entries for root, entries in self._entries.items() if entries}
            self._first = min((e.seen for es in self._entries.values() for e in es.values()), default=None)
            return {root: paths for root, paths in taken.items() if paths}

    def _settled(self, entries: dict[str, _Entry], now: float) -> list[str]:
        ready = set()
        for path, entry in entries.items():
            current = signature(path)
            if current != entry.signature:  # written since its last event: look again later
                entry.signature, entry.seen = current, now
            elif now - entry.seen >= self.settings.quiet:
                ready.add(path)
        # the two paths of a move go in one batch, so that the new path reuses the old one's vector
        return sorted(p for p in ready if entries[p].partner in ready or entries[p].partner not in entries)

    def put_back(self, root: str, paths: Iterable[str], now: float) -> None:
        """Paths of a batch that could not be applied yet (the library was busy)."""
        for path in paths:
            self.add(root, path, now)


def _is_candidate(path: str, is_directory: bool) -> bool:
    return is_directory or os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into pending paths: image files and folders created, changed, moved or deleted."""

    def __init__(self, pending: Pending, roots: list[str], ignored: str) -> None:
        self.pending, self.roots, self.ignored = pending, roots, ignored

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind == EVENT_TYPE_EVENTS_LOST:  # the kernel's queue overflowed: look at every root again
            for root in self.roots:
                self.pending.add(root, root, time.monotonic())
            return
        if kind in (EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE) or (event.is_directory and kind == "modified"):
            return
        src, dest = os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")
        now = time.monotonic()
        if dest:
            self._note(dest, event.is_directory, now, partner=src)
        self._note(src, event.is_directory, now, partner=dest or None)

    def _note(self, path: str, is_directory: bool, now: float, partner: str | None) -> None:
        if not _is_candidate(path, is_directory) or within(path, self.ignored):
            return
        for root in self.roots:
            if within(path, root):
                self.pending.add(root, path, now, partner if partner and within(partner, root) else None)
                return


class Watcher:
    """Watches `roots` and keeps `library` current with them, embedding with `encoder` (loaded once)."""

    def __init__(
        self,
        library: Library,
        encoder: Encoder,
        roots: Iterable[str],
        *,
        options: ScanOptions | None = None,
        settings: WatchSettings | None = None,
        workers: int = DEFAULT_DECODE_WORKERS,
        retry_errors: bool = False,
        on_batch: Callable[[WatchBatch], None] | None = None,
    ) -> None:
        """`retry_errors` applies to the catch-up run (a changed unreadable file is always tried again)."""
        self.library, self.encoder = library, encoder
        self.roots = check_roots(roots)
        self.options = options or ScanOptions()
        self.settings = settings or WatchSettings()
        self.workers, self.retry_errors = workers, retry_errors
        self.on_batch = on_batch
        self.pending = Pending(self.settings)
        self.ready = threading.Event()
        """Set once the catch-up run is done and every later change is being applied."""
        self.applying = False

    @property
    def idle(self) -> bool:
        """Caught up, with no change pending and no batch being applied."""
        return self.ready.is_set() and not self.applying and len(self.pending) == 0

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set; returns after the batch in progress is committed."""
        self.encoder.load()
        observer = self._start_observer()
        try:
            report = self._locked(stop, self._catch_up)
            if report is None:
                return
            self._announce(WatchBatch(", ".join(self.roots), report.scanned, report, catch_up=True))
            self.ready.set()
            while not stop.wait(self.settings.tick):
                self.applying = True
                try:
                    self._apply(self.pending.take(time.monotonic()))
                finally:
                    self.applying = False
        finally:
            observer.stop()
            observer.join()

    def _catch_up(self) -> IndexReport:
        return index_folders(
            self.library,
            self.encoder,
            self.roots,
            options=self.options,
            workers=self.workers,
            retry_errors=self.retry_errors,
        )

    def _apply(self, batches: dict[str, list[str]]) -> None:
        for root, paths in batches.items():
            try:
                report = index_paths(
                    self.library, self.encoder, root, paths, options=self.options, workers=self.workers
                )
            except LibraryBusyError:  # a manual index run holds the lock: keep the batch for later
                self.pending.put_back(root, paths, time.monotonic())
                continue
            self._announce(WatchBatch(root, len(paths), report))

    def _locked(self, stop: threading.Event, run: Callable[[], IndexReport]) -> IndexReport | None:
        """`run()`, waiting while another process holds the writer lock; None if stopped while waiting."""
        while True:
            try:
                return run()
            except LibraryBusyError:
                if stop.wait(self.settings.quiet):
                    return None

    def _announce(self, batch: WatchBatch) -> None:
        if self.on_batch is not None:
            self.on_batch(batch)

    def _start_observer(self) -> BaseObserver:
        observer = Observer()
        handler = _Handler(self.pending, self.roots, str(self.library.directory))
        try:
            for root in self.roots:
                observer.schedule(handler, root, recursive=True)
            observer.start()
        except OSError as exc:
            raise WatchError(
                f"cannot watch {', '.join(self.roots)}: {exc.strerror or exc} (on Linux, a large tree may need a "
                "higher fs.inotify.max_user_watches)"
            ) from exc
        return observer
