"""A library: one folder holding the store (or a URL to it), the derived FAISS file, and a writer lock.

The library records the model that made its vectors. Opening it with another model is refused; opening
it with no model named uses the recorded one, so `search` needs no `--model` after `index`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval import model_record, relevance_files
from retrieval.atomic import remove_older_generations
from retrieval.config import (
    DATABASE_FILE,
    DEFAULT_BACKEND,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_FAILURES_SHOWN,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    INDEX_FILE_PREFIX,
    INDEX_FILE_SUFFIX,
    LIBRARY_ENV,
    ONNX_FOLDER,
    default_library_dir,
)
from retrieval.errors import (
    DiskFullError,
    IndexFileWarning,
    IndexSaveError,
    IndexSaveWarning,
    LibraryBusyError,
    LibraryNotFoundError,
    LibraryReadOnlyError,
    ModelMismatchError,
)
from retrieval.index import LARGE, VectorIndex, gpu_count
from retrieval.index_file import Fingerprint, IndexFileProblem, Stamp, ids_digest, read_fingerprint
from retrieval.index_policy import build_index, rebuild_reason
from retrieval.library_facts import LibraryFacts
from retrieval.model.devices import probe_device
from retrieval.model.specs import ModelSpec
from retrieval.storage.opening import PRIVATE_FILE, private_folder
from retrieval.storage.reader import StoreReads, open_reader

if TYPE_CHECKING:
    from retrieval.model.encoder import Encoder
    from retrieval.storage.store import Store

_META_MODEL, _META_PRETRAINED, _META_DIM = "model", "pretrained", "dim"
_META_IDENTITY, _META_DESCRIPTION = "model_identity", "model_description"
_META_INDEX_STAMP = "index_file_stamp"
"""`generation size mtime_ns` of the FAISS file this library last wrote, after checking it whole: a file that
still has that stamp is loaded without the checks that read every id (0.25 s of a cold query at 1M)."""
_META_LIBRARY_ID = "library_id"
"""A random id, made when the first FAISS file is saved and written into each one: a file of another
library is never taken for this one's."""


class Library:
    """One library folder; `directory` None is the default one (CLIPSEARCH_LIBRARY, else the user data folder).

    With `reading` (a search, `info`), `reads` is the light `StoreReader` where it can read the library (no
    SQLAlchemy; `open_reader` says where), and the full `store` opens only to write (a FAISS file rebuilt)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        create: bool = False,
        database_url: str | None = None,
        reading: bool = False,
    ) -> None:
        self.directory = Path(directory or default_library_dir()).expanduser().resolve()
        database = self.directory / DATABASE_FILE
        if database_url is None and not database.exists() and not create:
            raise LibraryNotFoundError(
                f"no library at {self.directory}: run `clipsearch index FOLDER` first "
                f"(or point `directory` / {LIBRARY_ENV} at an existing one)",
                parameters=("directory",),
            )
        self._url, self._create = database_url or f"sqlite:///{database}", create
        self._store: Store | None = None
        light = open_reader(database) if reading and database_url is None else None
        self.reads: StoreReads = light or self.store
        if database_url is not None:  # once the store opened: a bad URL leaves no folder behind
            private_folder(self.directory)  # the FAISS file and the lock live here, the rows elsewhere
        self._stamp_key = _META_INDEX_STAMP if database_url is None else _shared_stamp_key(self.directory)

    @property
    def store(self) -> Store:
        """The full store, opened on first use. A new SQLite library (folder included) appears on its first
        write: a run that fails before (a model that cannot load) leaves nothing behind."""
        if self._store is None:
            from retrieval.storage.store import Store  # SQLAlchemy: for writes, and libraries the reader cannot read

            self._store = Store(self._url, create=self._create)
        return self._store

    def create(self) -> None:
        """Create the library's folder and database now if they are not there yet. A library opened with
        `create` appears by itself on its first write; this is for a caller that wants it before."""
        self.store.ensure_created()

    def close(self) -> None:
        if self.reads is not self._store:
            self.reads.close()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- model ---------------------------------------------------------------------------------
    def recorded_model(self) -> ModelSpec | None:
        model, pretrained = self.reads.get_meta(_META_MODEL), self.reads.get_meta(_META_PRETRAINED)
        return ModelSpec(model, pretrained) if model and pretrained else None

    def recorded_identity(self) -> str | None:
        return self.reads.get_meta(_META_IDENTITY)

    def recorded_description(self) -> str | None:
        """The recorded model as people read it: its label (a config file's name) and identity."""
        return self.reads.get_meta(_META_DESCRIPTION) or self.recorded_identity()

    def model_for(
        self, model: str | None = None, pretrained: str | None = None, *, or_default: bool = False
    ) -> ModelSpec:
        """The model a run on this library uses: the one named, completed from the record; else the recorded
        one; else, with `or_default` (a run that may start the library), DEFAULT_MODEL and DEFAULT_PRETRAINED.

        A model named without `pretrained` keeps the recorded weights when it is the recorded model (a
        relative config path names the recorded absolute one) and takes the default tag otherwise."""
        recorded = self.recorded_model()
        default = ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)
        if model is None and pretrained is None:
            if recorded is None and not or_default:
                raise LibraryNotFoundError(
                    f"the library at {self.directory} has no model recorded yet: index a folder first"
                )
            return recorded or default
        base = recorded or default
        if model is not None:
            model = ModelSpec(model, base.pretrained).absolute().model
        if pretrained is None:
            pretrained = base.pretrained if model in (None, base.model) else DEFAULT_PRETRAINED
        return ModelSpec(model or base.model, pretrained)

    def encoder(
        self,
        spec: ModelSpec | None = None,
        *,
        device: str = DEFAULT_DEVICE,
        precision: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_dir: str | None = None,
        backend: str = DEFAULT_BACKEND,
    ) -> Encoder:
        """An encoder for this library: the recorded model unless `spec` names one; a conflict is refused.
        Its ONNX exports (`backend`) are kept in the library, under `onnx/`."""
        from retrieval.model.encoder import Encoder  # model code loads with a model, not with the library

        spec = (spec or self.model_for()).absolute()
        encoder = Encoder(
            spec,
            device=device,
            precision=precision,
            batch_size=batch_size,
            cache_dir=cache_dir,
            backend=backend,
            onnx_dir=self.directory / ONNX_FOLDER,
            identity=model_record.known_identity(self.reads, spec, self.recorded_model(), self.recorded_identity()),
        )
        self.check_model(encoder)
        return encoder

    def check_model(self, encoder: Encoder) -> None:
        identity = self.recorded_identity()
        if identity is not None and identity != encoder.identity.key:
            raise ModelMismatchError(
                f"the library at {self.directory} was built with [{self.recorded_description()}] but this run "
                f"uses [{encoder.identity.description}]. Leave out `model`/`pretrained` to use the library's model, "
                "or give another `directory` for the new model.",
                parameters=("model", "pretrained", "directory"),
            )

    def bind_model(self, encoder: Encoder) -> None:
        """Record the encoder's model on first use; refuse a different one later. Its checkpoint's stamp is
        recorded each time (`model_record.note_checkpoint`)."""
        self.check_model(encoder)
        if self.recorded_identity() is None:
            self.store.set_meta(
                {
                    _META_MODEL: encoder.spec.model,
                    _META_PRETRAINED: encoder.spec.pretrained,
                    _META_IDENTITY: encoder.identity.key,
                    _META_DESCRIPTION: encoder.identity.description,
                    _META_DIM: str(encoder.dim),
                }
            )
        model_record.note_checkpoint(self.store, encoder.spec, self.recorded_model())

    def dim(self) -> int | None:
        value = self.reads.get_meta(_META_DIM)
        return int(value) if value else None

    def library_id(self) -> str | None:
        """The library's random id (made with its first FAISS file; None before): what tells two libraries apart."""
        return self.reads.get_meta(_META_LIBRARY_ID)

    def precision(self) -> str | None:
        """What made the library's vectors (see `LibraryFacts.precision`)."""
        return model_record.precision(self.reads)

    def record_precision(self, encoder: Encoder) -> None:
        """Note that `encoder` (loaded: its backend is settled) is about to embed images into the library; another
        precision than the recorded one warns (`model_record.record_precision` says why it is allowed)."""
        model_record.record_precision(self.store, encoder)

    def facts(self, failure_limit: int = DEFAULT_FAILURES_SHOWN) -> LibraryFacts:
        """The library's facts, with at most `failure_limit` skipped files; imports no model code."""
        stats = self.reads.stats(failure_limit)
        return LibraryFacts(
            library=self.directory,
            database=self._store.url.render_as_string(hide_password=True) if self._store else self._url,
            model=self.recorded_description(),
            model_identity=self.recorded_identity(),
            dim=self.dim(),
            precision=self.precision(),
            stats=stats,
            index_file=self._current_index_file(stats.generation, stats.indexed),
            model_device=probe_device(),
            faiss_gpus=gpu_count(),
        )

    # --- the derived FAISS file ----------------------------------------------------------------
    def index_path(self, generation: int) -> Path:
        return self.directory / f"{INDEX_FILE_PREFIX}{generation}{INDEX_FILE_SUFFIX}"

    def load_index(self, *, gpu: str = "auto", mmap: bool = False) -> VectorIndex:
        """The FAISS index of the store's current generation: the saved file if its fingerprint shows it is
        this library's, of this generation, whole and complete; otherwise rebuilt from the store's vectors
        and saved for next time. A damaged or foreign file is rebuilt with an `IndexFileWarning`; a rebuilt
        index that cannot be saved is used from memory with an `IndexSaveWarning`. `mmap` maps the file
        read-only instead of reading it whole (for searching; an index run needs a writable one)."""
        dim = self.dim()
        if dim is None:
            return VectorIndex(1, gpu=gpu)
        generation = self.reads.generation()
        path = self.index_path(generation)
        if path.exists():
            try:
                return self._with_vectors(self._read_checked(path, generation, dim, gpu=gpu, mmap=mmap))
            except IndexFileProblem as problem:
                if self.reads.generation() == generation:  # else a writer just moved on: stale, not bad
                    warnings.warn(
                        IndexFileWarning(f"the FAISS file {path} {problem}: rebuilding it from the store"), stacklevel=2
                    )
        return self.rebuild_index(gpu=gpu)

    def _read_checked(self, path: Path, generation: int, dim: int, *, gpu: str, mmap: bool) -> VectorIndex:
        """The index in `path` after checking it is this library's of `generation`. The file this library wrote
        (its stamp recorded, unchanged) is checked by its fingerprint alone; any other also against the store's
        count and by a digest of all its ids."""
        written_here = self.reads.get_meta(self._stamp_key) == _file_stamp(path, generation)
        fingerprint = self._check_fingerprint(path, generation, dim, check_count=not written_here)
        try:
            index = VectorIndex.load(path, gpu=gpu, mmap=mmap, trained_on=fingerprint.trained_on)
        except RuntimeError as exc:
            raise IndexFileProblem("cannot be read by faiss") from exc
        if (index.dim, len(index)) != (dim, fingerprint.count) or (
            not written_here and ids_digest(index.ids()) != fingerprint.ids_digest
        ):
            raise IndexFileProblem("does not hold the vectors its fingerprint names")
        return index

    def _check_fingerprint(
        self, path: Path, generation: int, dim: int, count: int | None = None, *, check_count: bool = True
    ) -> Fingerprint:
        """The file's fingerprint, if the file is whole and is this library's index of `generation`,
        `dim` and the store's count (unless not `check_count`); IndexFileProblem otherwise."""
        fingerprint = read_fingerprint(path)
        library_id = self.reads.get_meta(_META_LIBRARY_ID)
        if library_id is None or fingerprint.library_id != library_id:
            raise IndexFileProblem("belongs to another library")
        if fingerprint.generation != generation:
            raise IndexFileProblem(f"was written for generation {fingerprint.generation}, not {generation}")
        if fingerprint.dim != dim:
            raise IndexFileProblem(f"has dimension {fingerprint.dim}, the library {dim}")
        if not check_count:
            return fingerprint
        count = self.reads.count_vectors() if count is None else count
        if fingerprint.count != count:
            raise IndexFileProblem(f"holds {fingerprint.count} vectors, the store {count}")
        return fingerprint

    def _current_index_file(self, generation: int, count: int) -> Path | None:
        """The FAISS file of `generation` when its fingerprint checks out (what `facts` reports)."""
        path, dim = self.index_path(generation), self.dim()
        if dim is None or not path.exists():
            return None
        try:
            self._check_fingerprint(path, generation, dim, count)
        except IndexFileProblem:
            return None
        return path

    def rebuild_index(self, *, gpu: str = "auto") -> VectorIndex:
        """A new index from the store's vectors, of the kind its size calls for (retrieval/index_policy.py),
        saved for next time; when it cannot be saved it is returned anyway, with an `IndexSaveWarning`."""
        index, generation = self._build_from_store(gpu)
        try:
            self._write(index, generation)
        except IndexSaveError as exc:
            warnings.warn(IndexSaveWarning(f"{exc} This search runs from memory."), stacklevel=2)
        return index

    def _with_vectors(self, index: VectorIndex) -> VectorIndex:
        """A large index keeps PQ codes: it re-ranks and reconstructs from the store's vectors."""
        if index.kind == LARGE:
            dim, reads = index.dim, self.reads
            index.vector_source = lambda ids: reads.vectors_by_ids(ids, dim)
        return index

    def _build_from_store(self, gpu: str) -> tuple[VectorIndex, int]:
        dim = self.dim() or 1
        count = self.store.count_vectors()
        with self.store.vector_snapshot(dim) as (generation, batches):
            index = build_index(dim, count, batches, gpu=gpu, workdir=self.directory)
        return self._with_vectors(index), generation  # before `_write`, which samples it for the relevance

    def save_index(self, index: VectorIndex, generation: int) -> None:
        """Save as the file of `generation` (IndexSaveError when it cannot be written) and delete files of
        older generations (never newer ones, which a concurrent writer may have saved meanwhile). An index
        that has outgrown its kind (`rebuild_reason`) is rebuilt from the store and saved instead."""
        if rebuild_reason(index) is not None:
            index, generation = self._build_from_store("never")
        self._write(index, generation)

    def _write(self, index: VectorIndex, generation: int) -> None:
        path = self.index_path(generation)
        library_id = self.store.get_meta(_META_LIBRARY_ID)
        if library_id is None:
            library_id = secrets.token_hex(16)
            self.store.set_meta({_META_LIBRARY_ID: library_id})
        try:
            index.save(path, Stamp(library_id, generation))
        except OSError as exc:
            raise IndexSaveError(
                f"could not save the FAISS index {path}: {exc.strerror or exc}. The store is intact and the "
                "next search rebuilds the index from it; free some disk space or make the library folder writable."
            ) from exc
        self._stamp_if_complete(path, index, generation)
        with contextlib.suppress(OSError):  # statistics for the relevance: a search draws them again if missing
            relevance_files.write_sample(self.directory, index, generation)
        remove_older_generations(self.directory, INDEX_FILE_PREFIX, INDEX_FILE_SUFFIX, generation)

    def _stamp_if_complete(self, path: Path, index: VectorIndex, generation: int) -> None:
        """Record the stamp of the file just written when it holds as many vectors as the store (a caller of
        `save_index` may save any index): a load trusts a stamped file's count. Best effort: without a stamp,
        the next load checks every id."""
        stamp = _file_stamp(path, generation)
        if stamp is not None and len(index) == self.store.count_vectors():
            with contextlib.suppress(LibraryReadOnlyError, DiskFullError):
                self.store.set_meta({self._stamp_key: stamp})

    # --- one writer at a time ------------------------------------------------------------------
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """An exclusive lock on the library for an index run; the OS (or the database server) drops it if the
        process dies. A library that cannot be written is refused here (`LibraryReadOnlyError`); a new one is
        created now. Two parts: a file lock on this folder, whose FAISS file the run writes (a second run on the
        same folder is refused at once, `LibraryBusyError`), then the store's own run lock (`Store.exclusive_run`:
        on a PostgreSQL store shared by several machines, their runs take turns)."""
        self.store.ensure_writable()
        with self._folder_lock(), self.store.exclusive_run():
            yield

    @contextmanager
    def _folder_lock(self) -> Iterator[None]:
        lock_path = self.directory / "index.lock"
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise LibraryReadOnlyError(f"the library at {self.directory} is read-only: {exc.strerror}") from exc
        with open(descriptor, "r+") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: no advisory lock, rely on SQLite's own locking
                yield
                return
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise LibraryBusyError(f"another clipsearch process is indexing into {self.directory}") from exc
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()))
                handle.flush()
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _shared_stamp_key(directory: Path) -> str:
    """The stamp's key for this folder's FAISS file when the store is shared (a `database_url`): each machine's
    folder has a file of its own, and one stamp for all would send every other machine to the full checks. (A
    digest of host and folder: meta keys are at most 64 characters.)"""
    folder = hashlib.sha256(f"{socket.gethostname()}\0{directory}".encode("utf-8", "surrogateescape"))
    return f"{_META_INDEX_STAMP}:{folder.hexdigest()[:40]}"


def _file_stamp(path: Path, generation: int) -> str | None:
    """`generation size mtime_ns` of the file at `path` (None if it is gone): what `_META_INDEX_STAMP` holds."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{generation} {stat.st_size} {stat.st_mtime_ns}"
