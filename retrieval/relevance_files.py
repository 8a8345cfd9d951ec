"""The relevance calibration's two derived inputs, cached in the library folder.

- `relevance-sample-<generation>.npy`: a seeded sample of the library's vectors (float16, at most
  RELEVANCE_SAMPLE_SIZE), written with each FAISS file (`Library`), keyed to the store generation by its name;
  one that is missing, stale or unreadable is drawn again from the loaded index and saved.
- `relevance-neutral-<digest>.npy`: the neutral prompts' vectors, encoded once per model; the digest names
  the model identity and the prompts, so another model or another prompt list never reads them.

Both are statistics, rebuilt at small cost, so a file that cannot be saved (a read-only library) is used from
memory and left for the next search to try again.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.atomic import atomic_path, remove_older_generations
from retrieval.config import RELEVANCE_SAMPLE_SEED, RELEVANCE_SAMPLE_SIZE
from retrieval.relevance import Calibrator, neutral_prompts

if TYPE_CHECKING:
    from retrieval.index import VectorIndex
    from retrieval.library import Library
    from retrieval.model.encoder import Encoder

SAMPLE_PREFIX = "relevance-sample-"
NEUTRAL_PREFIX = "relevance-neutral-"
SUFFIX = ".npy"


def sample_path(directory: Path, generation: int) -> Path:
    return directory / f"{SAMPLE_PREFIX}{generation}{SUFFIX}"


def draw_sample(index: VectorIndex, size: int = RELEVANCE_SAMPLE_SIZE) -> np.ndarray:
    """A seeded sample of `size` of the index's vectors (all of them in a smaller index), as float16."""
    ids = np.sort(index.ids())
    if len(ids) > size:
        ids = np.sort(np.random.default_rng(RELEVANCE_SAMPLE_SEED).choice(ids, size, replace=False))
    return index.reconstruct(ids).astype(np.float16)


def write_sample(directory: Path, index: VectorIndex, generation: int) -> np.ndarray:
    """Draw the sample of `index` (the library's index of `generation`), save it, and delete the samples of
    older generations (never newer ones, which a concurrent writer may have saved). OSError if it cannot."""
    sample = draw_sample(index)
    _save(sample_path(directory, generation), sample)
    remove_older_generations(directory, SAMPLE_PREFIX, SUFFIX, generation)
    return sample


def library_sample(directory: Path, generation: int, index: VectorIndex) -> np.ndarray:
    """The saved sample of `generation`, or (missing, stale or unreadable) one drawn from `index` and saved."""
    saved = read_vectors(sample_path(directory, generation), index.dim)
    if saved is not None:
        return saved
    try:
        return write_sample(directory, index, generation)
    except OSError:
        return draw_sample(index)


def neutral_path(directory: Path, identity_key: str) -> Path:
    digest = hashlib.sha256("\n".join([identity_key, *neutral_prompts()]).encode()).hexdigest()[:16]
    return directory / f"{NEUTRAL_PREFIX}{digest}{SUFFIX}"


def neutral_vectors(directory: Path, encoder: Encoder) -> np.ndarray:
    """The neutral prompts' vectors under `encoder`'s model: saved ones, else encoded now and saved."""
    path = neutral_path(directory, encoder.identity.key)
    saved = read_vectors(path, encoder.dim, rows=len(neutral_prompts()))
    if saved is not None:
        return saved
    vectors = encoder.encode_texts(neutral_prompts()).astype(np.float32)
    with contextlib.suppress(OSError):
        _save(path, vectors)
    return vectors


def calibrator_for(library: Library, encoder: Encoder, index: VectorIndex) -> Calibrator:
    """The relevance calibrator of `library` searched through `index` with `encoder`'s text queries."""
    directory = library.directory
    sample = library_sample(directory, library.reads.generation(), index)
    return Calibrator.fit(neutral_vectors(directory, encoder), sample)


def read_vectors(path: Path, dim: int, *, rows: int | None = None) -> np.ndarray | None:
    """The float matrix saved at `path` if it is whole and has `dim` columns (and `rows` rows); else None."""
    try:
        with open(path, "rb") as handle:
            array = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    shape_ok = array.ndim == 2 and array.shape[1] == dim and len(array) > 0 and rows in (None, len(array))
    if not shape_ok or array.dtype.kind != "f" or not np.isfinite(array).all():
        return None
    return array


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, private=True) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
