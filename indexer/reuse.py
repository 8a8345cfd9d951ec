"""Keeping vectors that are still good: touched files, moved or renamed files, and copies.

A file is identified by its content hash. Hashing is done only where it can pay off: a changed file
whose size did not change (maybe only touched), and a new file whose size equals that of a stored image
(maybe moved, renamed or copied). Everything else goes straight to decoding and embedding, which hashes
the bytes it reads anyway.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from indexer.scan import DiskFile, Plan
from retrieval.errors import UnreadableImageError
from retrieval.fileread import iter_regular_file
from retrieval.storage.records import ImageRecord
from retrieval.storage.store import Store

_HASH_CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str, *, follow_symlinks: bool = True) -> str | None:
    """The content hash, or None when the file cannot be read (it then goes to the decoder, which records why).
    Reads as the decoder does: a regular file only, up to its size (`retrieval.fileread`)."""
    digest = hashlib.sha256()
    try:
        for chunk in iter_regular_file(path, chunk=_HASH_CHUNK, follow_symlinks=follow_symlinks):
            digest.update(chunk)
    except UnreadableImageError:
        return None
    return digest.hexdigest()


@dataclass
class Reuse:
    touched: list[tuple[DiskFile, ImageRecord]] = field(default_factory=list)
    moved: list[tuple[DiskFile, ImageRecord]] = field(default_factory=list)
    copied: list[tuple[DiskFile, ImageRecord, str]] = field(default_factory=list)
    to_embed: list[DiskFile] = field(default_factory=list)
    replaced: set[str] = field(default_factory=set)
    """Paths in `to_embed` whose stored row has a vector that the new one replaces in the index."""
    gone: list[ImageRecord] = field(default_factory=list)


def find_reuse(plan: Plan, store: Store, workers: int, *, follow_symlinks: bool = True) -> Reuse:
    reuse = Reuse()
    maybe_touched = [(d, s) for d, s in plan.changed if d.size == s.size and s.has_vector and s.content_hash]
    donors_by_size: dict[int, list[ImageRecord]] = defaultdict(list)
    for state in store.states_with_sizes({d.size for d in plan.new}):
        if state.has_vector:
            donors_by_size[state.size].append(state)
    maybe_moved = [d for d in plan.new if d.size in donors_by_size]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        paths = [d.path for d, _ in maybe_touched] + [d.path for d in maybe_moved]
        hashes = dict(zip(paths, pool.map(partial(hash_file, follow_symlinks=follow_symlinks), paths), strict=True))

    touched_paths = set()
    for disk, state in maybe_touched:
        if hashes[disk.path] == state.content_hash:
            reuse.touched.append((disk, state))
            touched_paths.add(disk.path)
    reuse.to_embed.extend(d for d, _ in plan.changed if d.path not in touched_paths)
    reuse.replaced = {d.path for d, s in plan.changed if s.has_vector and d.path not in touched_paths}

    gone_ids = {s.id for s in plan.gone}
    claimed: set[int] = set()
    for disk in plan.new:
        digest = hashes.get(disk.path)
        donors = [s for s in donors_by_size.get(disk.size, []) if digest and s.content_hash == digest]
        vanished = [s for s in donors if s.id not in claimed and (s.id in gone_ids or not os.path.exists(s.path))]
        if vanished:
            reuse.moved.append((disk, vanished[0]))
            claimed.add(vanished[0].id)
        elif donors:
            reuse.copied.append((disk, donors[0], digest or ""))
        else:
            reuse.to_embed.append(disk)
    reuse.gone = [s for s in plan.gone if s.id not in claimed]
    reuse.to_embed.sort(key=lambda d: d.path)
    return reuse
