"""What a thumbnail costs: made on the first request, read and checked on every later one.

Photo-like images of camera sizes (a lighting gradient, sensor-like noise and a few soft shapes, so JPEG and
PNG sizes are realistic): 4000x3000 and 6000x4000 JPEGs (q90), some with EXIF orientation 6, and 3000x2000
PNGs. They are indexed once with the packaged tiny model (random weights: only the records matter here) into
a library under --workdir, which a second run reuses. Each request is what the server does for
`/api/images/ID/thumbnail`: `served_path` (the store's record, the roots, a stat) and then
`ThumbnailCache.path_for`. The table gives, per kind of image, the first request (the thumbnail is made:
read, hash, draft-mode decode, resize, encode, atomic write) and a cached request (found, read whole and its
digest checked), p50 and p95 in ms, and the bytes on disk per thumbnail; then a page of 48 thumbnails, cold
(made one after another, and by `prepare` in --workers threads) and warm. A last row decodes a 6000x4000 JPEG
fully with Pillow (no draft mode), for scale.

    python benchmarks/thumbnails.py --workdir /tmp/thumbs-bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.pipeline import index_folders
from retrieval import Library
from retrieval.config import THUMBNAIL_FOLDER
from retrieval.model.reference import model_file
from retrieval.model.specs import ModelSpec
from retrieval.served_files import served_path
from retrieval.thumbnails import ThumbnailCache

KINDS = (  # (name, count, size, format, EXIF orientation)
    ("jpeg 4000x3000", 16, (4000, 3000), "JPEG", None),
    ("jpeg 6000x4000", 12, (6000, 4000), "JPEG", None),
    ("jpeg 4000x3000 rotated", 10, (4000, 3000), "JPEG", 6),
    ("png 3000x2000", 10, (3000, 2000), "PNG", None),
)
PAGE = 48
WARM_PASSES = 5


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A gradient lit scene with soft blobs, texture a thumbnail keeps and per-pixel sensor noise: JPEG files
    and thumbnails about the size of a camera's."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    light = (xs / width * rng.uniform(-60, 60) + ys / height * rng.uniform(-60, 60))[..., None]
    pixels = base + light
    for _ in range(6):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * width
        blob = np.exp(-(((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2)))[..., None]
        pixels += blob * rng.uniform(-90, 90, 3).astype(np.float32)
    coarse = Image.fromarray(rng.normal(128, 40, (height // 24, width // 24, 3)).clip(0, 255).astype(np.uint8))
    pixels += (np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) - 128) * 0.6  # texture
    pixels += rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_photos(folder: Path) -> None:
    seed = 0
    for name, count, size, kind, orientation in KINDS:
        for number in range(count):
            seed += 1
            target = folder / name.replace(" ", "_") / f"{number:02d}.{'jpg' if kind == 'JPEG' else 'png'}"
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            exif = Image.Exif()
            if orientation is not None:
                exif[274] = orientation
            options = {"quality": 90, "exif": exif.tobytes()} if kind == "JPEG" else {}
            photo(size, seed).save(target, kind, **options)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Requests:
    """The server's two calls for one thumbnail request, timed; `empty` forgets every cached thumbnail."""

    def __init__(self, library: Library) -> None:
        self.library, self.cache = library, ThumbnailCache(library.directory, library=library)

    def one(self, image_id: int) -> float:
        started = time.perf_counter()
        record, _ = served_path(self.library, image_id)
        self.cache.path_for(record)
        return (time.perf_counter() - started) * 1000

    def disk_bytes(self, image_id: int) -> int:
        return self.cache.path_for(served_path(self.library, image_id)[0]).stat().st_size

    def empty(self) -> None:
        shutil.rmtree(self.library.directory / THUMBNAIL_FOLDER, ignore_errors=True)


def per_kind(requests: Requests, ids_by_kind: dict[str, list[int]], repeats: int) -> None:
    cold: dict[str, list[float]] = {kind: [] for kind in ids_by_kind}
    warm: dict[str, list[float]] = {kind: [] for kind in ids_by_kind}
    for _ in range(repeats):
        requests.empty()
        for kind, ids in ids_by_kind.items():
            cold[kind] += [requests.one(i) for i in ids]
        for _ in range(WARM_PASSES):
            for kind, ids in ids_by_kind.items():
                warm[kind] += [requests.one(i) for i in ids]
    header = ("images", "n", "first p50", "first p95", "cached p50", "cached p95", "KB/thumb")
    print("{:<26}{:>4}{:>11}{:>11}{:>12}{:>12}{:>10}".format(*header))
    for kind, ids in ids_by_kind.items():
        first, again = percentiles(cold[kind]), percentiles(warm[kind])
        kilobytes = statistics.mean(requests.disk_bytes(i) for i in ids) / 1024
        row = (kind, len(ids), first[0], first[1], again[0], again[1], kilobytes)
        print("{:<26}{:>4}{:>11.1f}{:>11.1f}{:>12.2f}{:>12.2f}{:>10.1f}".format(*row))


def pages(requests: Requests, page: list[int], repeats: int, workers: int) -> None:
    cold, made, warm = [], [], []
    for _ in range(repeats):
        requests.empty()
        cold.append(sum(requests.one(i) for i in page))
        warm += [sum(requests.one(i) for i in page) for _ in range(WARM_PASSES)]
        requests.empty()
        made.append(timed(lambda: requests.cache.prepare(page, workers=workers)))
    print(f"\npage of {len(page)} thumbnails, ms (median of {repeats} cold, {WARM_PASSES * repeats} warm):")
    print(f"  cold, made one after another: {statistics.median(cold):9.0f}")
    print(f"  cold, prepare(workers={workers}):     {statistics.median(made):9.0f}")
    print(f"  warm (cached):                {statistics.median(warm):9.1f}")


def full_decode(path: Path) -> float:
    def decode() -> None:
        with Image.open(path) as image:
            image.load()
            image.thumbnail((320, 320))

    return min(timed(decode) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thumbs-bench"))
    parser.add_argument("--repeats", type=int, default=2, help="cold passes (the cache emptied before each)")
    parser.add_argument("--workers", type=int, default=2, help="threads of the cold page made by prepare")
    args = parser.parse_args()
    photos = args.workdir / "photos"
    make_photos(photos)
    with Library(args.workdir / "library", create=True) as library:
        encoder = library.encoder(ModelSpec(str(model_file("tiny.json")), "none"), backend="torch")
        index_folders(library, encoder, [str(photos)], workers=1)
        states = library.store.file_states_under(str(photos))
        ids_by_kind = {
            name: sorted(r.id for p, r in states.items() if Path(p).parent.name == name.replace(" ", "_"))
            for name, *_ in KINDS
        }
        requests = Requests(library)
        per_kind(requests, ids_by_kind, args.repeats)
        pages(requests, [i for ids in ids_by_kind.values() for i in ids][:PAGE], args.repeats, args.workers)
        requests.cache.close()
    sample = next((photos / "jpeg_6000x4000").glob("*.jpg"))
    print(f"\nfor scale: Pillow full decode + thumbnail of a 6000x4000 JPEG, no draft: {full_decode(sample):.0f} ms")


if __name__ == "__main__":
    main()
