"""Indexing throughput on this machine: images/s for whole index runs, plus the decode and encode stages
measured alone, side by side in one run.

    python benchmarks/index_throughput.py --images 256 --models tiny,ViT-B-32

Models: `tiny` is the packaged tiny.json (retrieval/model/data/) with random weights; any open_clip name
runs with random weights too (`--pretrained none`), which costs the same compute as the real weights. Photos are
generated JPEGs (gradients and shapes, 1600x1200 by default, so draft-mode decoding is exercised).
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from indexer import index_folders
from retrieval import Encoder, Library, ModelSpec, RandomWeightsWarning, model_file, read_and_decode

TINY = model_file("tiny.json")


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        rng = random.Random(number)
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            box = (x, y, x + rng.randrange(50, size[0] // 2), y + rng.randrange(50, size[1] // 2))
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        image.save(folder / f"photo{number:05d}.jpg", quality=90)


def spec_for(name: str) -> ModelSpec:
    return ModelSpec(str(TINY) if name == "tiny" else name, "none")


def time_index(name: str, photos: Path, workers: int, batch_size: int, repeat: int) -> tuple[float, int]:
    """Best of `repeat` full index runs into fresh libraries (the first also warms the page cache)."""
    encoder = Encoder(spec_for(name), device="cpu", batch_size=batch_size)
    encoder.load()  # model load is not indexing time
    best, embedded = 0.0, 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as library_dir, Library(library_dir, create=True) as library:
            report = index_folders(library, encoder, [str(photos)], workers=workers)
        best, embedded = max(best, report.images_per_second), report.embedded
    return best, embedded


def time_decode(photos: Path, limit: int, min_side: int = 224) -> float:
    """Decode rate on one thread; a `min_side` of at least half the photo's short side turns draft mode off."""
    files = sorted(photos.glob("*.jpg"))[:limit]
    started = time.perf_counter()
    for path in files:
        read_and_decode(str(path), min_side=min_side)
    return len(files) / (time.perf_counter() - started)


def time_encode(name: str, photos: Path, batch_size: int, limit: int) -> float:
    encoder = Encoder(spec_for(name), device="cpu", batch_size=batch_size)
    images = [read_and_decode(str(p))[1].image for p in sorted(photos.glob("*.jpg"))[:limit]]
    pixels = torch.stack([encoder.preprocess(image) for image in images])
    encoder.encode_image_tensors(pixels[:batch_size])  # warm-up
    started = time.perf_counter()
    encoder.encode_image_tensors(pixels)
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="1600x1200", help="generated photo size WxH")
    parser.add_argument("--models", default="tiny,ViT-B-32")
    parser.add_argument("--workers", default="1,2", help="decode worker counts to compare")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="index runs per row; the best is shown")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's note about random weights
    width, height = (int(v) for v in args.size.split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} photos of {args.size}")
    with tempfile.TemporaryDirectory() as scratch:
        photos = Path(scratch) / "photos"
        make_photos(photos, args.images, (width, height))
        draft, full = time_decode(photos, 64), time_decode(photos, 64, min_side=max(width, height))
        print(f"\ndecode only, 1 thread: {draft:.1f} images/s with draft mode, {full:.1f} full size", end="")
        print(f" ({draft / full:.1f}x)\n")
        print(f"{'model':<12} {'stage':<22} {'images/s':>9}")
        for name in args.models.split(","):
            encode_rate = time_encode(name, photos, args.batch_size, min(args.images, 64))
            print(f"{name:<12} {'encode only':<22} {encode_rate:>9.1f}")
            for workers in (int(w) for w in args.workers.split(",")):
                rate, embedded = time_index(name, photos, workers, args.batch_size, args.repeat)
                assert embedded == args.images, f"only {embedded} of {args.images} embedded"
                print(f"{name:<12} {f'index, {workers} workers':<22} {rate:>9.1f}")


if __name__ == "__main__":
    main()
