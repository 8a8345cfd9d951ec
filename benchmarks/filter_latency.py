"""Each search filter's warm latency and recall at library scale, through the Python API.

    nice -n 10 python benchmarks/filter_latency.py --images 100000
    nice -n 10 python benchmarks/filter_latency.py --images 1000000 --workdir /tmp/fl-1m --keep

Fills a library with synthetic CLIP-like 512-d vectors (`retrieval.quality.synthetic_vectors`) through the
public store API (`Store.writer()` + `StoreWriter.add_images`, one transaction per chunk), bound to a tiny
512-d random-weights open_clip config, with facts drawn so that each filter keeps a known share: 1000
folders (0.1% each), dates over ten years (a fifth undated, dated by their mtime instead), 1000 camera
models in 10 brands, extensions (jpg, 10% heic, 1% png, 0.1% gif), sizes (10% square, 0.1% 6000 px wide).

For each filter it times, warm (p50 over the queries, one query at a time): resolving it to ids through the
light `StoreReader` (what a cold CLI search uses) and through the SQLAlchemy `Store`, and the whole filtered
search `Searcher.search_vector(..., search_filter=...)` (resolve, faiss with the id selector, rows); and the
filtered search's recall@10 against the exact filtered top 10 (numpy over the stored float16 vectors of
the images that pass, which the benchmark picks from the facts it drew, not through the store). `found k`
is the share of queries that got min(10, passing) results. Time is wall (CPU of the process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import Encoder, FileMetadata, Library, ModelSpec, RandomWeightsWarning, Searcher, SearchFilter, Store
from retrieval.quality.synthetic_vectors import ClipLikeSpace, fill_library

K = 10
FOLDERS = 1000
EPOCH = datetime(2015, 1, 1)
DAYS = 3650
TINY_512 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
EXTENSIONS = np.array(["jpg", "heic", "png", "gif"])
EXTENSION_SHARES = [0.889, 0.1, 0.01, 0.001]
SIZES = np.array([(4032, 3024), (3024, 4032), (2000, 2000), (6000, 4000)])
SIZE_SHARES = [0.6, 0.299, 0.1, 0.001]


class Facts:
    """The drawn facts of image `position`, as arrays over all positions (the reference filters these)."""

    def __init__(self, images: int) -> None:
        rng = np.random.default_rng(1)
        self.folder = np.arange(images) * FOLDERS // images
        self.day = rng.integers(0, DAYS, images)
        self.dated = rng.random(images) >= 0.2
        self.camera = rng.integers(0, 1000, images)
        self.extension = rng.choice(len(EXTENSIONS), images, p=EXTENSION_SHARES)
        self.size = rng.choice(len(SIZES), images, p=SIZE_SHARES)

    def meta(self, position: int) -> FileMetadata:
        moment = EPOCH + timedelta(days=int(self.day[position]), hours=12)
        width, height = (int(side) for side in SIZES[self.size[position]])
        camera = int(self.camera[position])
        return FileMetadata(
            path=f"/photos/{self.folder[position]:04d}/IMG_{position:07d}.{EXTENSIONS[self.extension[position]]}",
            size=2_000_000 + position,
            mtime_ns=int(moment.timestamp()) * 10**9,
            content_hash=f"{position:064x}",
            width=width,
            height=height,
            format="JPEG",
            taken_at=moment if self.dated[position] else None,
            camera_make=f"Brand{camera // 100}",
            camera_model=f"Model {camera:03d}",
        )


def days_between(start: str, end: str) -> tuple[int, int]:
    return tuple((datetime.fromisoformat(day) - EPOCH).days for day in (start, end))  # type: ignore[return-value]


def filters(facts: Facts, images: int) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """name -> (SearchFilter.of arguments, which positions pass)."""
    width, height = SIZES[facts.size, 0], SIZES[facts.size, 1]
    folder = f"/photos/{FOLDERS // 2:04d}"

    def dated(start: str, end: str) -> np.ndarray:
        first, last = days_between(start, end)
        return (facts.day >= first) & (facts.day < last)

    return {
        "--in one folder (0.1%)": ({"within": folder}, facts.folder == FOLDERS // 2),
        "--in 10 folders (1%)": (
            {"within": [f"/photos/{n:04d}" for n in range(10)]},
            facts.folder < 10,
        ),
        "--after/--before 4 days (0.1%)": (
            {"after": "2020-03-01", "before": "2020-03-05"},
            dated("2020-03-01", "2020-03-05"),
        ),
        "--after/--before 5 weeks (1%)": (
            {"after": "2020-03-01", "before": "2020-04-06"},
            dated("2020-03-01", "2020-04-06"),
        ),
        "--after 2024 (10%)": ({"after": "2024"}, dated("2024-01-01", "2099-01-01")),
        "--camera 'model 042' (0.1%)": ({"camera": "model 042"}, facts.camera == 42),
        "--camera 'model 04' (1%)": ({"camera": "model 04"}, facts.camera // 10 == 4),
        "--camera brand4 (10%)": ({"camera": "brand4"}, facts.camera // 100 == 4),
        "--ext gif (0.1%)": ({"extensions": "gif"}, EXTENSIONS[facts.extension] == "gif"),
        "--ext png (1%)": ({"extensions": "png"}, EXTENSIONS[facts.extension] == "png"),
        "--ext heic (10%)": ({"extensions": "heic"}, EXTENSIONS[facts.extension] == "heic"),
        "--min-width 6000 (0.1%)": ({"min_width": 6000}, width >= 6000),
        "--orientation square (10%)": ({"orientation": "square"}, width == height),
        "--orientation portrait (30%)": ({"orientation": "portrait"}, width < height),
        "dates 10% AND brand 10% AND 100 folders 10%": (
            {"after": "2024", "camera": "brand4", "within": [f"/photos/{n:04d}" for n in range(100)]},
            dated("2024-01-01", "2099-01-01") & (facts.camera // 100 == 4) & (facts.folder < 100),
        ),
        "heic 10% AND portrait 30% AND 2020 (10%)": (
            {"extensions": "heic", "orientation": "portrait", "after": "2020", "before": "2021"},
            (EXTENSIONS[facts.extension] == "heic") & (width < height) & dated("2020-01-01", "2021-01-01"),
        ),
    }


def fill(library: Library, encoder: Encoder, space: ClipLikeSpace, facts: Facts, images: int) -> float | None:
    """Insert the vectors and facts (`fill_library`: one transaction per chunk, resuming after those committed)."""
    shown = print_progress(images)
    return fill_library(library, encoder, space, images, facts.meta, shown)


def print_progress(images: int) -> Callable[[int], None]:
    return lambda done: print(f"  inserted {done}/{images}", file=sys.stderr, end="\r")


def timed(action: Callable[[Any], Any], items: Any) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `action(item)` over the items, one call each."""
    walls, cpus = [], []
    for item in items:
        wall, cpu = time.perf_counter(), time.process_time()
        action(item)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def ms(seconds: tuple[float, float]) -> str:
    return f"{seconds[0] * 1000:.2f} ({seconds[1] * 1000:.2f})"


def measure(
    chosen: SearchFilter, searcher: Searcher, store: Store, probes: np.ndarray, allowed: np.ndarray, vectors: np.ndarray
) -> list[str]:
    """The table's cells for one filter: resolve times (reader, Store), filtered search time, recall, found k."""
    reads = searcher.library.reads
    chosen.resolve(reads)  # warm: the pages this filter reads are cached, as for a repeated query
    reader = timed(lambda _: chosen.resolve(reads), range(len(probes)))
    full = timed(lambda _: chosen.resolve(store), range(len(probes)))
    search = timed(lambda q: searcher.search_vector(q, K, search_filter=chosen), probes)
    recalls, complete = [], []
    for query in probes:
        found = [result.id for result in searcher.search_vector(query, K, search_filter=chosen)]
        exact = allowed[np.argsort(-(vectors @ query), kind="stable")[:K]]
        recalls.append(len(set(found) & set(exact.tolist())) / max(1, len(exact)))
        complete.append(len(found) == min(K, len(allowed)))
    return [ms(reader), ms(full), ms(search), f"{np.mean(recalls):.3f}", f"{np.mean(complete):.0%}"]


def run(workdir: Path, images: int, queries: int) -> None:
    space, facts = ClipLikeSpace(seed=0), Facts(images)
    config = workdir / "tiny-512.json"
    config.write_text(json.dumps(TINY_512))
    encoder = Encoder(ModelSpec(str(config), "none"), device="cpu")
    with Library(workdir / "library", create=True) as library:
        rate = fill(library, encoder, space, facts, images)
        ids = library.store.ids_under("/photos")
        library.rebuild_index(gpu="never")
    if rate is not None:
        print(f"fill: {rate:.0f} images/s through StoreWriter.add_images")
    stored = space.image_vectors(images).astype(np.float16).astype(np.float32)  # the values the store keeps
    probes, _ = space.text_queries(queries, seed=7)
    store = Store(f"sqlite:///{workdir / 'library' / 'library.db'}")
    with Library(workdir / "library", reading=True) as library:
        searcher = Searcher(library, encoder, gpu="never")
        index = searcher.index
        print(f"index: {index.kind}, {len(index)} vectors" + (f", nprobe {index.nprobe}" if index.nprobe else ""))
        unfiltered = timed(lambda q: searcher.search_vector(q, K), probes)
        print(f"unfiltered search_vector p50: {ms(unfiltered)} ms\n")
        header = [
            "filter",
            "passing",
            "resolve, reader ms",
            "resolve, Store ms",
            "filtered search ms",
            "recall@10",
            "found k",
        ]
        print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
        for name, (arguments, mask) in filters(facts, images).items():
            row = measure(SearchFilter.of(**arguments), searcher, store, probes, ids[mask], stored[mask])
            print("| " + " | ".join([name, f"{mask.sum()} ({mask.mean():.2%})", *row]) + " |")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30, help="queries per filter (p50 and recall)")
    parser.add_argument("--workdir", type=Path, help="where the library goes (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir; a kept, filled one is reused")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="filter-latency-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{args.images} images, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, in {workdir}")
    try:
        run(workdir, args.images, args.queries)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
