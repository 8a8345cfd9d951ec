"""A library: one folder holding the store (or a URL to it), the derived FAISS file, and a writer lock.

The library records the model that made its vectors. Opening it with another model is refused; opening
it with no model named uses the recorded one, so `search` needs no `--model` after `index`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.config import DATABASE_FILE, INDEX_FILE_PREFIX, INDEX_FILE_SUFFIX
from retrieval.errors import LibraryBusyError, LibraryNotFoundError, ModelMismatchError
from retrieval.index import VectorIndex
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from retrieval.storage.store import Store

_META_MODEL, _META_PRETRAINED, _META_DIM = "model", "pretrained", "dim"
_META_IDENTITY, _META_DESCRIPTION = "model_identity", "model_description"


class Library:
    def __init__(self, directory: str | Path, *, create: bool = False, database_url: str | None = None) -> None:
        self.directory = Path(directory).expanduser().resolve()
        database = self.directory / DATABASE_FILE
        if database_url is None and not database.exists() and not create:
            raise LibraryNotFoundError(
                f"no library at {self.directory}: run `clipsearch index FOLDER` first "
                "(or point --library / CLIPSEARCH_LIBRARY at an existing one)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = Store(database_url or f"sqlite:///{database}")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- model ---------------------------------------------------------------------------------
    def recorded_model(self) -> ModelSpec | None:
        model, pretrained = self.store.get_meta(_META_MODEL), self.store.get_meta(_META_PRETRAINED)
        return ModelSpec(model, pretrained) if model and pretrained else None

    def recorded_identity(self) -> str | None:
        return self.store.get_meta(_META_IDENTITY)

    def recorded_description(self) -> str | None:
        """The recorded model as people read it: its label (a config file's name) and identity."""
        return self.store.get_meta(_META_DESCRIPTION) or self.recorded_identity()

    def encoder(self, spec: ModelSpec | None = None, **options: object) -> Encoder:
        """An encoder for this library: the recorded model unless `spec` names one; a conflict is refused."""
        recorded = self.recorded_model()
        chosen = spec or recorded
        if chosen is None:
            raise LibraryNotFoundError(
                f"the library at {self.directory} has no model recorded yet: index a folder first"
            )
        encoder = Encoder(chosen, **options)  # type: ignore[arg-type]
        self.check_model(encoder)
        return encoder

    def check_model(self, encoder: Encoder) -> None:
        identity = self.recorded_identity()
        if identity is not None and identity != encoder.identity.key:
            raise ModelMismatchError(
                f"the library at {self.directory} was built with [{self.recorded_description()}] but this run "
                f"uses [{encoder.identity.description}]. Leave out --model/--pretrained to use the library's model, "
                "or give another --library for the new model."
            )

    def bind_model(self, encoder: Encoder) -> None:
        """Record the encoder's model on first use; refuse a different one later."""
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

    def dim(self) -> int | None:
        value = self.store.get_meta(_META_DIM)
        return int(value) if value else None

    # --- the derived FAISS file ----------------------------------------------------------------
    def index_path(self, generation: int) -> Path:
        return self.directory / f"{INDEX_FILE_PREFIX}{generation}{INDEX_FILE_SUFFIX}"

    def load_index(self, *, gpu: str = "auto") -> VectorIndex:
        """The FAISS index of the store's current generation: the saved file if it is current and
        complete, otherwise rebuilt from the store's vectors (and saved for next time)."""
        dim = self.dim()
        if dim is None:
            return VectorIndex(1, gpu=gpu)
        generation = self.store.generation()
        path = self.index_path(generation)
        if path.exists():
            index = VectorIndex.load(path, gpu=gpu)
            if index.dim == dim and len(index) == self.store.count_vectors():
                return index
        return self.rebuild_index(gpu=gpu)

    def rebuild_index(self, *, gpu: str = "auto") -> VectorIndex:
        dim = self.dim() or 1
        index = VectorIndex(dim, gpu=gpu)
        with self.store.vector_snapshot(dim) as (generation, batches):
            for ids, vectors in batches:
                index.add(ids, vectors)
        self.save_index(index, generation)
        return index

    def save_index(self, index: VectorIndex, generation: int) -> None:
        """Save as the file of `generation` and delete files of older generations (never newer ones,
        which a concurrent writer may have saved meanwhile)."""
        index.save(self.index_path(generation))
        for old in self.directory.glob(f"{INDEX_FILE_PREFIX}*{INDEX_FILE_SUFFIX}"):
            number = old.name[len(INDEX_FILE_PREFIX) : -len(INDEX_FILE_SUFFIX)]
            if number.isdigit() and int(number) < generation:
                old.unlink(missing_ok=True)

    # --- one writer at a time ------------------------------------------------------------------
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """An exclusive lock on the library for an index run; the OS drops it if the process dies."""
        lock_path = self.directory / "index.lock"
        with open(lock_path, "a+") as handle:
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
