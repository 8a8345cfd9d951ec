"""Folder -> rows and vectors: scan, reuse what is still good, decode in parallel, encode, commit.

Every batch is one transaction (rows and vectors together), so a run killed at any moment loses at most
the batch in flight; the next run sees the committed files as unchanged and finishes the rest. The
FAISS file is saved at the end under the store's generation; after a kill it is stale and the next load
rebuilds it from the store.

Files are read as regular files only and up to their size (`retrieval.fileread`), so a FIFO or a device
under a root cannot stall or exhaust a run, and the decoding threads share one `MemoryBudget` of full-size
pixels, so a few huge images decode in turn rather than all at once.
"""

from __future__ import annotations

import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from indexer.reuse import Reuse, find_reuse, hash_bytes
from indexer.roots import enclosing_roots, keep_present, record_run
from indexer.scan import (
    DiskFile,
    Plan,
    ScanOptions,
    ScanResult,
    check_roots,
    fold_paths,
    plan_changes,
    scan_paths,
    scan_root,
)
from retrieval.config import DECODE_MEMORY_BUDGET, DEFAULT_DECODE_WORKERS
from retrieval.decode import read_and_decode
from retrieval.errors import UnreadableImageError
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.membudget import MemoryBudget
from retrieval.model.encoder import Encoder, ImageTransform
from retrieval.progress import ProgressCallback
from retrieval.storage.records import FileMetadata, copy_fields
from retrieval.storage.roots import within
from retrieval.storage.vectors import as_stored


@dataclass
class IndexReport:
    roots: list[str]
    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0
    touched: int = 0
    moved: int = 0
    copied: int = 0
    removed: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    unlisted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Image-named paths left out on purpose (FIFOs, sockets, devices, folders reached twice), with why."""
    links_skipped: int = 0
    """Symbolic links not followed (see `ScanOptions.follow_symlinks`)."""
    seconds: float = 0.0
    decode_wait_seconds: float = 0.0
    """How long the encoding thread waited for decoded images: near 0 when decoding keeps ahead of the model
    (off the critical path), most of `seconds` when decoding is what limits the run."""

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Prepared:
    meta: FileMetadata
    pixels: torch.Tensor


@dataclass(frozen=True)
class Failed:
    disk: DiskFile
    reason: str
    content_hash: str | None


@dataclass(frozen=True)
class Reading:
    """How the decoding threads read and decode: shared by all of them for one run."""

    follow_symlinks: bool
    budget: MemoryBudget


EmbedStage = Callable[[list[DiskFile], "BatchCommitter", Reading], None]
"""Decodes and encodes `files` and hands every file, embedded or failed, to the committer once; the
default runs in this process (`embed_in_threads`), `indexer.ray_index` runs it on a Ray cluster."""


def index_folders(
    library: Library,
    encoder: Encoder,
    roots: Iterable[str],
    *,
    options: ScanOptions | None = None,
    workers: int = DEFAULT_DECODE_WORKERS,
    retry_errors: bool = False,
    progress: ProgressCallback | None = None,
    memory_budget: int = DECODE_MEMORY_BUDGET,
    embed: EmbedStage | None = None,
) -> IndexReport:
    """Bring the library up to date with `roots`: embed new and changed images, keep moved and
    unchanged ones, forget deleted ones. Unreadable files are recorded, never fatal. `progress` is
    called with (files done, files to embed) after each committed batch. The decoding threads hold at
    most `memory_budget` bytes of full-size pixels at once (see `MemoryBudget`). A root under a recorded root
    refreshes only that folder, and forgets only images whose files are gone (`indexer.roots`). `embed` replaces
    the local decode-and-encode stage (threads here, `workers` of them), e.g. by one on a Ray cluster."""
    started = time.perf_counter()
    report = IndexReport(roots=check_roots(roots))
    options = options or ScanOptions()
    reading = Reading(options.follow_symlinks, MemoryBudget(memory_budget))
    with _indexing(library, encoder) as index:
        enclosing = enclosing_roots(library.store, report.roots)
        plan = _plan(library, report, options, retry_errors, enclosing)
        _update(library, index, encoder, plan, reading, workers, report, progress, embed)
        record_run(library.store, report.roots, enclosing, options)
    report.seconds = time.perf_counter() - started
    return report


def index_paths(
    library: Library,
    encoder: Encoder,
    root: str,
    paths: Iterable[str],
    *,
    options: ScanOptions | None = None,
    workers: int = DEFAULT_DECODE_WORKERS,
    memory_budget: int = DECODE_MEMORY_BUDGET,
) -> IndexReport:
    """Bring the library up to date with `paths` only (files or folders under `root`, present or gone), as a
    run on `root` would for them: what `watch` applies for a batch of file system events. Moves within the
    batch keep their vectors (a path gone and one new with the same content)."""
    started = time.perf_counter()
    report = IndexReport(roots=check_roots([root]))
    options = options or ScanOptions()
    reading = Reading(options.follow_symlinks, MemoryBudget(memory_budget))
    root = report.roots[0]
    folded = [path for path in fold_paths(os.path.abspath(path) for path in paths) if within(path, root)]
    with _indexing(library, encoder) as index:
        enclosing = enclosing_roots(library.store, report.roots)
        scan = scan_paths(folded, root, options)
        known = {}
        for path in folded:
            known.update(library.store.file_states_under(path))
            state = library.store.image_by_path(path)
            if state is not None:
                known[path] = state
        plan = _scanned(report, scan, plan_changes(scan, known), bool(enclosing))
        report.unchanged = plan.unchanged
        _update(library, index, encoder, plan, reading, workers, report, None)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _indexing(library: Library, encoder: Encoder) -> Iterator[VectorIndex]:
    """Bind the model, hold the writer lock, and hand out the FAISS index, saved at the end under the store's
    generation."""
    if library.recorded_identity() is None:
        encoder.load()  # a model that cannot load (weights offline) must not become the library's model
    library.bind_model(encoder)
    with library.writer_lock():
        index = library.load_index(gpu="never")
        yield index
        library.save_index(index, library.store.generation())


def _update(
    library: Library,
    index: VectorIndex,
    encoder: Encoder,
    plan: Plan,
    reading: Reading,
    workers: int,
    report: IndexReport,
    progress: ProgressCallback | None,
    embed: EmbedStage | None = None,
) -> None:
    """Moves, copies and deletions first (no model), then the files to embed, through `embed` or this
    process's `workers` decoding threads."""
    reuse = find_reuse(plan, library.store, workers, follow_symlinks=reading.follow_symlinks)
    _apply_reuse(library, index, reuse, report)
    stage = embed or functools.partial(embed_in_threads, workers=workers)
    _embed_all(library, index, encoder, reuse, reading, stage, report, progress)


def _plan(
    library: Library, report: IndexReport, options: ScanOptions, retry_errors: bool, enclosing: dict[str, str]
) -> Plan:
    merged = Plan()
    for root in report.roots:
        scan = scan_root(root, options)
        plan = plan_changes(scan, library.store.file_states_under(root), retry_errors=retry_errors)
        plan = _scanned(report, scan, plan, root in enclosing)
        merged.new += plan.new
        merged.changed += plan.changed
        merged.gone += plan.gone
        merged.unchanged += plan.unchanged
    report.unchanged = merged.unchanged
    return merged


def _scanned(report: IndexReport, scan: ScanResult, plan: Plan, subfolder: bool) -> Plan:
    """Count a scan in the report; a subfolder run's plan forgets only files gone from disk."""
    report.scanned += len(scan.files)
    report.unlisted.extend(scan.unlisted)
    report.skipped.extend(scan.skipped)
    report.links_skipped += scan.links_skipped
    return keep_present(plan) if subfolder else plan


def _apply_reuse(library: Library, index: VectorIndex, reuse: Reuse, report: IndexReport) -> None:
    """Moves, touches, copies and deletions: one transaction, no model needed."""
    added_ids, added_vectors = [], []
    with library.store.writer() as writer:
        for disk, state in reuse.moved:
            writer.move_image(state.id, disk.path, disk.size, disk.mtime_ns)
        for disk, state in reuse.touched:
            writer.touch_image(state.id, disk.size, disk.mtime_ns)
        for disk, donor, digest in reuse.copied:
            meta = FileMetadata(disk.path, disk.size, disk.mtime_ns, digest)
            added_ids.append(writer.copy_vector(meta, donor.id))
            added_vectors.append(index.reconstruct([donor.id])[0])
        removed = writer.delete_images(state.id for state in reuse.gone)
    if added_ids:
        index.add(added_ids, np.stack(added_vectors))
    index.remove([state.id for state in reuse.gone])
    report.moved, report.touched, report.copied, report.removed = (
        len(reuse.moved),
        len(reuse.touched),
        len(reuse.copied),
        removed,
    )


def prepare(disk: DiskFile, preprocess: ImageTransform, reading: Reading) -> Prepared | Failed:
    """Runs in a worker thread (or a Ray task): read, hash, decode, preprocess. Never raises for a bad file."""
    content_hash = None
    try:
        data, decoded = read_and_decode(disk.path, follow_symlinks=reading.follow_symlinks, budget=reading.budget)
        content_hash = hash_bytes(data)
        pixels = preprocess(decoded.image)
    except UnreadableImageError as exc:
        return Failed(disk, exc.reason, content_hash)
    except Exception as exc:  # a malformed file must not stop the run, whatever Pillow raises
        return Failed(disk, f"cannot prepare image: {type(exc).__name__}: {exc}", content_hash)
    meta = copy_fields(
        FileMetadata, decoded.info, path=disk.path, size=disk.size, mtime_ns=disk.mtime_ns, content_hash=content_hash
    )
    return Prepared(meta, pixels)


def _prepared_in_order(
    pool: ThreadPoolExecutor,
    files: list[DiskFile],
    preprocess: ImageTransform,
    reading: Reading,
    window: int,
    report: IndexReport,
) -> Iterator[Prepared | Failed]:
    """Decode ahead of the consumer by at most `window` files, yielding results in input order; the time the
    consumer waits for a decoded file is added to `report.decode_wait_seconds`."""
    pending: deque[Future[Prepared | Failed]] = deque()
    upcoming = iter(files)
    for disk in upcoming:
        pending.append(pool.submit(prepare, disk, preprocess, reading))
        if len(pending) >= window:
            break
    while pending:
        waited = time.perf_counter()
        result = pending.popleft().result()
        report.decode_wait_seconds += time.perf_counter() - waited
        yield result
        following = next(upcoming, None)
        if following is not None:
            pending.append(pool.submit(prepare, following, preprocess, reading))


def _embed_all(
    library: Library,
    index: VectorIndex,
    encoder: Encoder,
    reuse: Reuse,
    reading: Reading,
    stage: EmbedStage,
    report: IndexReport,
    progress: ProgressCallback | None,
) -> None:
    files = reuse.to_embed
    if not files:
        return
    encoder.load()  # before the workers start, so they share one loaded preprocess
    stage(files, BatchCommitter(library, index, encoder, reuse.replaced, report, progress, len(files)), reading)


def embed_in_threads(files: list[DiskFile], batches: BatchCommitter, reading: Reading, *, workers: int) -> None:
    """The local stage: `workers` threads decode while this thread encodes and commits batch after batch."""
    encoder = batches.encoder
    batches.library.record_precision(encoder)
    batch: list[Prepared | Failed] = []
    window = 2 * encoder.batch_size + workers
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="clipsearch-decode") as pool:
        prepared = _prepared_in_order(pool, files, encoder.preprocess, reading, window, batches.report)
        for position, item in enumerate(prepared):
            batch.append(item)
            if len(batch) == encoder.batch_size or position == len(files) - 1:
                batches.commit(batch)
                batch = []


class BatchCommitter:
    """Writes each batch in one transaction, then mirrors the committed change in the in-memory FAISS index
    and reports progress: `commit` encodes a prepared batch here, `write` takes vectors encoded elsewhere."""

    def __init__(
        self,
        library: Library,
        index: VectorIndex,
        encoder: Encoder,
        replaced: set[str],
        report: IndexReport,
        progress: ProgressCallback | None = None,
        total: int = 0,
    ) -> None:
        self.library, self.index, self.encoder, self.report = library, index, encoder, report
        self.replaced = replaced
        self.model_key = encoder.identity.short_key
        self.progress, self.total, self.done = progress, total, 0

    def commit(self, batch: list[Prepared | Failed]) -> None:
        good = [item for item in batch if isinstance(item, Prepared)]
        failed = [item for item in batch if isinstance(item, Failed)]
        vectors = self.encoder.encode_image_tensors(torch.stack([g.pixels for g in good])) if good else None
        self.write([item.meta for item in good], vectors, failed)

    def write(self, metas: list[FileMetadata], vectors: np.ndarray | None, failed: list[Failed]) -> None:
        """One transaction: `metas` with their `vectors` (one row each) and the `failed` files."""
        # as the store keeps them (float16), so that the index always holds exactly the stored vectors
        stored = as_stored(vectors) if metas and vectors is not None else None
        written: list[tuple[str, int]] = []
        with self.library.store.writer() as writer:
            if stored is not None:  # new files in one multi-row INSERT, changed ones replaced in place
                added = writer.add_images(metas, stored, self.model_key)
                written += [(meta.path, row_id) for meta, row_id in zip(metas, added, strict=True)]
            for failure in failed:
                disk = failure.disk
                row_id = writer.record_failure(
                    disk.path, disk.size, disk.mtime_ns, failure.reason, failure.content_hash
                )
                written.append((disk.path, row_id))
                self.report.failures.append((disk.path, failure.reason))
        # Only rows that had a vector are in the index; removing is a scan of the whole index, so skip the rest.
        self.index.remove([row_id for path, row_id in written if path in self.replaced])
        if stored is not None:
            self.index.add([row_id for _, row_id in written[: len(metas)]], stored)
        self.report.embedded += len(metas)
        self.report.failed += len(failed)
        self.done += len(metas) + len(failed)
        if self.progress:
            self.progress(self.done, self.total)
