"""Recall@k of the real engine on a captioned dataset (`clipsearch bench recall`).

The dataset's images are indexed by the indexer into a library (through a folder of links named by
dataset position, so exactly the dataset's images are indexed, and nothing else in their folders), the
captions are encoded by the encoder, and both directions are searched through FAISS:
text->image in the library's own index, image->text in a `VectorIndex` of the caption vectors. The same
vectors are also ranked exactly with numpy (`retrieval.quality.recall`); with the exact flat index both agree,
and `--ann FACTORY` adds an approximate faiss index to measure what approximation costs.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.pipeline import index_folders
from indexer.scan import ScanOptions
from retrieval.errors import DatasetError
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.progress import ProgressCallback
from retrieval.quality.captions import CaptionedDataset
from retrieval.quality.recall import DEFAULT_KS, Recall, image_to_text_hits, rank, recall_at_k, text_to_image_hits

LINKS_FOLDER = "bench-images"


@dataclass
class RecallBenchReport:
    dataset: str
    images: int
    captions: int
    model: str
    model_key: str
    ks: list[int]
    index: Recall
    exact: Recall
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ann: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def index_matches_exact(self) -> bool:
        return self.index == self.exact

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "images": self.images,
            "captions": self.captions,
            "model": self.model,
            "model_key": self.model_key,
            "ks": self.ks,
            "index": self.index.to_json(),
            "exact": self.exact.to_json(),
            "index_matches_exact": self.index_matches_exact,
            "unreadable_images": len(self.unreadable),
            "ann": self.ann,
            "seconds": self.seconds,
        }


def bench_recall(
    library: Library,
    encoder: Encoder,
    data: CaptionedDataset,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    ann: str | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> RecallBenchReport:
    """Index `data`'s images into `library` (incrementally: a second run re-embeds nothing), then measure
    recall@k both ways. Unreadable images are left out with their captions, and listed in the report."""
    if not ks or min(ks) < 1:
        raise DatasetError("recall needs at least one k >= 1")
    clock: dict[str, float] = {}
    started = time.perf_counter()
    index, image_ids, image_vectors, unreadable = index_dataset(library, encoder, data, workers, progress)
    clock["index"] = time.perf_counter() - started
    kept = data if not unreadable else _without(data, {position for position, _ in unreadable})
    if not kept.captions:
        raise DatasetError(f"no readable image in {data.source}")
    started = time.perf_counter()
    text_vectors = encoder.encode_texts(list(kept.captions))
    clock["encode_texts"] = time.perf_counter() - started
    owners = np.asarray(kept.caption_image, dtype=np.int64)
    depth = max(ks)

    started = time.perf_counter()
    ranked_images = ranked_positions(index, text_vectors, depth, image_ids)
    caption_index = VectorIndex(text_vectors.shape[1], gpu="never")
    caption_index.add(np.arange(len(text_vectors)), text_vectors)
    ranked_captions = _ranked(caption_index, image_vectors, depth, id_to_position=None)
    clock["search"] = time.perf_counter() - started
    engine = Recall(text_to_image_hits(ranked_images, owners, ks), image_to_text_hits(ranked_captions, owners, ks))
    exact = recall_at_k(image_vectors, text_vectors, owners, ks)
    result = RecallBenchReport(
        dataset=str(data.source),
        images=len(kept),
        captions=len(kept.captions),
        model=encoder.identity.description,
        model_key=encoder.identity.key,
        ks=list(ks),
        index=engine,
        exact=exact,
        unreadable=[(str(data.images[position]), reason) for position, reason in unreadable],
        seconds=clock,
    )
    if ann:
        result.ann = _ann_recall(ann, image_vectors, text_vectors, owners, ks)
    return result


def index_dataset(
    library: Library, encoder: Encoder, data: CaptionedDataset, workers: int, progress: ProgressCallback | None
) -> tuple[VectorIndex, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Index exactly `data`'s images into `library` (a benchmark's own): its index, the store ids and vectors
    of the readable images in dataset order, and (position, reason) of the others."""
    _check_own_library(library, library.directory / LINKS_FOLDER)
    links = _link_images(library.directory / LINKS_FOLDER, data)
    follow = ScanOptions(follow_symlinks=True)  # the folder holds only our own links to the dataset's images
    index_folders(library, encoder, [str(links)], options=follow, workers=workers, progress=progress)
    index = library.load_index()
    return (index, *_dataset_vectors(library, index, links, data))


def ranked_positions(index: VectorIndex, queries: np.ndarray, k: int, ids: np.ndarray) -> np.ndarray:
    """Top-k dataset positions (of the images whose store ids are `ids`) per query, through the FAISS index."""
    return _ranked(index, queries, k, id_to_position={int(i): p for p, i in enumerate(ids)})


def _check_own_library(library: Library, links: Path) -> None:
    """Refuse a library that holds other images: they would crowd the dataset's images out of the FAISS top-k
    (recall too low), and the benchmark's images would show up in that library's searches."""
    others = library.store.count_vectors() - len(library.store.ids_under(str(links)))
    if others > 0:
        raise DatasetError(
            f"the library at {library.directory} holds {others} image(s) that are not from a recall benchmark; "
            "give the benchmark a library of its own (a new `library` folder)",
            parameters=("library",),
        )


def _link_name(position: int, path: Path) -> str:
    """A link's name: the image's dataset position and a digest of its target. The digest makes a link that
    would point elsewhere (another dataset, reordered) a new file to the indexer, never an "unchanged" one:
    the indexer compares size and mtime, which the old and new targets may share (archive-extracted files)."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"{position:08d}-{digest}{path.suffix.lower()}"


def _link_images(folder: Path, data: CaptionedDataset) -> Path:
    """One symlink per dataset image, named by `_link_name`: the indexer sees exactly the dataset."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {_link_name(position, path): path.resolve() for position, path in enumerate(data.images)}
    for entry in os.scandir(folder):
        if entry.name not in wanted or not entry.is_symlink() or Path(os.readlink(entry.path)) != wanted[entry.name]:
            os.unlink(entry.path)
    for name, target in wanted.items():
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(target)
    return folder


def _dataset_vectors(
    library: Library, index: VectorIndex, links: Path, data: CaptionedDataset
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Store ids and vectors of the dataset's images in dataset order, and (position, reason) of failures."""
    ids: list[int] = []
    unreadable: list[tuple[int, str]] = []
    for position, path in enumerate(data.images):
        record = library.store.image_by_path(str(links / _link_name(position, path)))
        if record is None or record.error:
            unreadable.append((position, record.error if record and record.error else "not indexed"))
        else:
            ids.append(record.id)
    id_array = np.asarray(ids, dtype=np.int64)
    return id_array, index.reconstruct(id_array), unreadable


def _without(data: CaptionedDataset, dropped: set[int]) -> CaptionedDataset:
    new_position: dict[int, int] = {}
    for position in range(len(data.images)):
        if position not in dropped:
            new_position[position] = len(new_position)
    pairs = [(t, new_position[o]) for t, o in zip(data.captions, data.caption_image, strict=True) if o in new_position]
    return CaptionedDataset(
        data.source,
        tuple(path for position, path in enumerate(data.images) if position not in dropped),
        tuple(text for text, _ in pairs),
        tuple(owner for _, owner in pairs),
    )


def _ranked(index: VectorIndex, queries: np.ndarray, k: int, id_to_position: dict[int, int] | None) -> np.ndarray:
    """Top-k gallery positions per query through the FAISS index, ties to the lower position (as the exact
    ranking does): fetch more than k, and more again for any query whose fetched list ends in a tie."""
    total = len(index)
    fetch = min(total, k + 16)
    distances, ids = index.search(queries, fetch)
    unresolved: np.ndarray = np.flatnonzero(distances[:, min(k, fetch) - 1] == distances[:, fetch - 1])
    if fetch >= total:
        unresolved = unresolved[:0]
    while len(unresolved) and fetch < total:
        fetch = min(total, fetch * 4)
        more_d, more_i = index.search(queries[unresolved], fetch)
        distances = _widen(distances, fetch)
        ids = _widen(ids, fetch, fill=-1)
        distances[unresolved], ids[unresolved] = more_d, more_i
        still = more_d[:, min(k, fetch) - 1] == more_d[:, fetch - 1]
        unresolved = unresolved[still] if fetch < total else unresolved[:0]
    positions = ids if id_to_position is None else np.vectorize(lambda i: id_to_position.get(int(i), -1))(ids)
    order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), -distances), axis=1)
    return np.take_along_axis(positions, order, axis=1)[:, :k]


def _widen(array: np.ndarray, width: int, fill: float = -np.inf) -> np.ndarray:
    if array.shape[1] >= width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=fill)


def _ann_recall(
    factory: str, image_vectors: np.ndarray, text_vectors: np.ndarray, owners: np.ndarray, ks: Sequence[int]
) -> dict[str, Any]:
    """Recall@k with an approximate faiss index (`factory`, e.g. "HNSW32" or "IVF64,Flat") in both
    directions, and how much of the exact top-k it finds ("overlap")."""
    depth = max(ks)

    def search(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
        try:
            index = faiss.index_factory(gallery.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise DatasetError(f"faiss cannot build index '{factory}': {str(exc).splitlines()[0]}") from exc
        if not index.is_trained:
            index.train(gallery)
        index.add(gallery)
        return index.search(queries, depth)[1]

    ann_images, ann_captions = search(image_vectors, text_vectors), search(text_vectors, image_vectors)
    exact_images, exact_captions = rank(text_vectors, image_vectors, depth), rank(image_vectors, text_vectors, depth)
    recall = Recall(text_to_image_hits(ann_images, owners, ks), image_to_text_hits(ann_captions, owners, ks))
    return {
        "factory": factory,
        "recall": recall.to_json(),
        "overlap_with_exact": {
            f"@{k}": {
                "text_to_image": _overlap(ann_images[:, :k], exact_images[:, :k]),
                "image_to_text": _overlap(ann_captions[:, :k], exact_captions[:, :k]),
            }
            for k in ks
        },
    }


def _overlap(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that the approximate top-k also holds, in percent."""
    found = [len(set(a.tolist()) & set(e.tolist())) / max(1, len(e)) for a, e in zip(approximate, exact, strict=True)]
    return 100.0 * float(np.mean(found)) if found else 0.0
