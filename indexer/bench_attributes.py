"""Precision@k of short attribute queries through the real engine (`clipsearch bench attributes`).

The images of a generated dataset split (its JSONL records carry each picture's scene) are indexed by the
indexer into a library of the benchmark's own, the fixed queries of `retrieval.quality.attributes` are
encoded by the encoder and searched in the library's FAISS index, and each hit is checked against the
scene of the picture found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.bench_recall import index_dataset, ranked_positions
from retrieval.errors import DatasetError
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.progress import ProgressCallback
from retrieval.quality.attributes import (
    DEFAULT_PRECISION_KS,
    AttributePrecision,
    attribute_precision,
    attribute_queries,
)
from retrieval.quality.captions import load_captions


@dataclass
class AttributeBenchReport:
    dataset: str
    images: int
    model: str
    model_key: str
    precision: AttributePrecision
    unreadable: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "images": self.images,
            "model": self.model,
            "model_key": self.model_key,
            "unreadable_images": self.unreadable,
            "seconds": self.seconds,
        } | self.precision.to_json()


def load_scenes(path: str | Path) -> tuple[Any, list[dict[str, Any]]]:
    """A generated split's captioned dataset and, in the same order, each image's scene."""
    source = Path(path).expanduser()
    data = load_captions(source, format="jsonl")
    by_image: dict[Path, dict[str, Any]] = {}
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record.get("scene"), dict):
            raise DatasetError(
                f"{source} line {number} has no scene: the attribute benchmark needs a split written by "
                "generate_dataset (its records carry each picture's scene)"
            )
        by_image[(source.parent / record["image"]).resolve()] = record["scene"]
    return data, [by_image[image.resolve()] for image in data.images]


def bench_attributes(
    library: Library,
    encoder: Encoder,
    captions_file: str | Path,
    *,
    ks: Sequence[int] = DEFAULT_PRECISION_KS,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> AttributeBenchReport:
    """Index the split's images into `library` (incrementally) and measure precision@k per attribute."""
    if not ks or min(ks) < 1:
        raise DatasetError("precision needs at least one k >= 1")
    data, scenes = load_scenes(captions_file)
    clock: dict[str, float] = {}
    started = time.perf_counter()
    index, ids, _, unreadable = index_dataset(library, encoder, data, workers, progress)
    clock["index"] = time.perf_counter() - started
    dropped = {position for position, _ in unreadable}
    kept = [scene for position, scene in enumerate(scenes) if position not in dropped]
    if not kept:
        raise DatasetError(f"no readable image in {captions_file}")
    started = time.perf_counter()
    queries = attribute_queries()
    vectors = encoder.encode_texts([query.text for query in queries])
    ranked = ranked_positions(index, vectors, min(max(ks), len(kept)), ids)
    clock["search"] = time.perf_counter() - started
    return AttributeBenchReport(
        dataset=str(captions_file),
        images=len(kept),
        model=encoder.identity.description,
        model_key=encoder.identity.key,
        precision=attribute_precision(ranked, queries, kept, ks),
        unreadable=len(unreadable),
        seconds=clock,
    )
