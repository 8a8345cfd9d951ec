"""What a library records of its model beyond the identity: the checkpoint's stamp, so that the identity stands
without hashing the checkpoint on every query, and what made the vectors (runtime and precision).

Both live in the store's meta table; `Library` reads and writes them through these functions.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

from retrieval.errors import DiskFullError, LibraryReadOnlyError, PrecisionMixWarning
from retrieval.model.specs import ModelIdentity, ModelSpec, checkpoint_stamp, identity_of

if TYPE_CHECKING:
    from retrieval.model.encoder import Encoder
    from retrieval.storage.reader import StoreReads
    from retrieval.storage.store import Store

CHECKPOINT_STAMP = "checkpoint_stamp"
"""`size mtime_ns` of the recorded model's checkpoint file when its identity was last checked: while the file
keeps it, the recorded identity stands without hashing the file again (a large checkpoint took seconds)."""
VECTOR_PRECISION = "vector_precision"
"""What made the library's vectors, as `Encoder.made_by` says (`onnx int8`), several joined by `, ` once runs
with different precisions have embedded into it."""


def known_identity(
    store: StoreReads, spec: ModelSpec, recorded: ModelSpec | None, key: str | None
) -> ModelIdentity | None:
    """The recorded identity (`key`) of `spec`, when `spec` is the `recorded` model and its checkpoint file has
    the stamp recorded with it; else None (worked out again, the checkpoint hashed)."""
    stamp = checkpoint_stamp(spec)
    if key is None or stamp is None or spec != recorded or stamp != store.get_meta(CHECKPOINT_STAMP):
        return None
    return identity_of(spec, checkpoint_weights=key.split(" | ", 1)[1])


def note_checkpoint(store: Store, spec: ModelSpec, recorded: ModelSpec | None) -> None:
    """Record the stamp of the recorded model's checkpoint, its identity just checked (`Library.bind_model`, at
    the start of every index run; a search never writes it, so it never waits for an index run's write lock).
    Best effort: a read-only library hashes the checkpoint on every run instead."""
    stamp = checkpoint_stamp(spec)
    if stamp is None or spec != recorded or stamp == store.get_meta(CHECKPOINT_STAMP):
        return
    with contextlib.suppress(LibraryReadOnlyError, DiskFullError):
        store.set_meta({CHECKPOINT_STAMP: stamp})


def precision(store: StoreReads) -> str | None:
    return store.get_meta(VECTOR_PRECISION)


def record_precision(store: Store, encoder: Encoder) -> None:
    """Add what makes `encoder`'s vectors to the record before it embeds into the library.

    Another precision than the recorded one is allowed, with a `PrecisionMixWarning`: int8 and fp32 vectors of
    one model are comparable (each int8 vector keeps a cosine of at least INT8_MIN_COSINE to its fp32 one;
    `bench recall` measures the cost), so one library may hold both, and the record then names both. Another
    runtime at the same precision (torch and ONNX fp32 agree within ONNX_MAX_ABS_DIFF) is recorded silently."""
    made_by, recorded = encoder.made_by, precision(store)
    known = recorded.split(", ") if recorded else []
    if made_by in known:
        return
    if known and encoder.precision not in {label.split(" ")[-1] for label in known}:
        warnings.warn(
            PrecisionMixWarning(
                f"the library's vectors were made with {recorded}; this run adds vectors made with {made_by} "
                "(the same model, so they stay comparable). For one precision throughout, index into a new "
                "`directory`."
            ),
            stacklevel=3,
        )
    store.set_meta({VECTOR_PRECISION: ", ".join([*known, made_by])})
