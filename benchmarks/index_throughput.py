"""Indexing throughput on this machine, torch against ONNX Runtime fp32 and int8, side by side in one run:
images/s for the encode stage alone and for whole index runs (decoding in worker threads while the model
encodes), then the recall that int8 costs, measured by `bench recall` on the reference model.

    python benchmarks/index_throughput.py --images 256 --models reference,ViT-B-32

Models: `reference` is the packaged reference model (retrieval/model/data/, real weights); `tiny` the
packaged tiny.json; any open_clip name runs with seeded random weights (`--pretrained none`), which cost
the same compute as real ones. Photos are generated JPEGs (shapes on colour, 1600x1200 by default, so
draft-mode decoding is exercised). ONNX exports are made before timing starts (they are a one-off per
library) into a scratch folder.
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
from indexer.bench_recall import bench_recall
from retrieval import Encoder, Library, ModelSpec, RandomWeightsWarning, model_file, read_and_decode, reference_spec
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset

RUNTIMES = {"torch": ("torch", "fp32"), "onnx fp32": ("onnx", "fp32"), "onnx int8": ("onnx", "int8")}


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
    if name == "reference":
        return reference_spec()
    return ModelSpec(str(model_file("tiny.json")) if name == "tiny" else name, "none")


def encoder_for(name: str, runtime: str, batch_size: int, exports: Path) -> Encoder:
    """A loaded encoder (exported and verified first, for ONNX): loading is not indexing time."""
    backend, precision = RUNTIMES[runtime]
    encoder = Encoder(spec_for(name), device="cpu", backend=backend, precision=precision, batch_size=batch_size,
                      onnx_dir=exports)  # fmt: skip
    encoder.load()
    return encoder


def time_index(encoder: Encoder, photos: Path, workers: int, repeat: int) -> tuple[float, float]:
    """Best of `repeat` full index runs into fresh libraries (the first also warms the page cache): images/s,
    and the share of that run's time the encoder spent waiting for decoded images (0: decoding kept ahead)."""
    best, waiting = 0.0, 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as library_dir, Library(library_dir, create=True) as library:
            report = index_folders(library, encoder, [str(photos)], workers=workers)
        assert report.embedded == len(list(photos.glob("*.jpg"))), f"only {report.embedded} embedded"
        if report.images_per_second > best:
            best, waiting = report.images_per_second, report.decode_wait_seconds / report.seconds
    return best, waiting


def time_encode(encoder: Encoder, pixels: torch.Tensor, repeat: int) -> tuple[float, float]:
    """Best of `repeat` encodes of the preprocessed batch (after one warm-up batch): images per second of
    wall time, and per second of this process's CPU time (all threads), which other load on a shared
    machine distorts less."""
    encoder.encode_image_tensors(pixels[: encoder.batch_size])
    wall, cpu = 0.0, 0.0
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        encoder.encode_image_tensors(pixels)
        wall = max(wall, len(pixels) / (time.perf_counter() - started))
        cpu = max(cpu, len(pixels) / (time.process_time() - cpu_started))
    return wall, cpu


def time_decode(photos: Path, limit: int, min_side: int = 224) -> float:
    """Decode rate on one thread; a `min_side` of at least half the photo's short side turns draft mode off."""
    files = sorted(photos.glob("*.jpg"))[:limit]
    started = time.perf_counter()
    for path in files:
        read_and_decode(str(path), min_side=min_side)
    return len(files) / (time.perf_counter() - started)


def throughput_table(args: argparse.Namespace, photos: Path, exports: Path) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    header = f"{'model':<10} {'stage':<20}" + "".join(f"{runtime:>11}" for runtime in RUNTIMES)
    print(header + "   fp32/torch  int8/torch")
    for name in args.models.split(","):
        encoders = {runtime: encoder_for(name, runtime, args.batch_size, exports) for runtime in RUNTIMES}
        images = [read_and_decode(str(p))[1].image for p in sorted(photos.glob("*.jpg"))[: args.encode_images]]
        pixels = torch.stack([encoders["torch"].preprocess(image) for image in images])
        encoded = {runtime: time_encode(encoder, pixels, args.repeat) for runtime, encoder in encoders.items()}
        rows = {
            "encode only": {runtime: rates[0] for runtime, rates in encoded.items()},
            "encode, per CPU-s": {runtime: rates[1] for runtime, rates in encoded.items()},
        }
        waits = {}
        for count in workers:
            runs = {runtime: time_index(encoder, photos, count, args.repeat) for runtime, encoder in encoders.items()}
            rows[f"index, {count} workers"] = {runtime: rate for runtime, (rate, _) in runs.items()}
            waits[f"index, {count} workers"] = {runtime: 100 * share for runtime, (_, share) in runs.items()}
        for stage, rates in rows.items():
            ratios = f"{rates['onnx fp32'] / rates['torch']:>12.2f}x{rates['onnx int8'] / rates['torch']:>11.2f}x"
            print(f"{name:<10} {stage:<20}" + "".join(f"{rates[r]:>11.1f}" for r in RUNTIMES) + ratios)
            if stage in waits:
                print(
                    f"{name:<10} {'  % waiting decode':<20}" + "".join(f"{waits[stage][r]:>10.1f}%" for r in RUNTIMES)
                )


def recall_table(images: int, scratch: Path) -> None:
    """`bench recall` of the reference model on `images` generated test scenes, once per runtime."""
    dataset = generate_dataset(scratch / "shapes", sizes={"test": images})
    data = load_captions(dataset.split_file("test"))
    print(f"\nrecall of the reference model on {images} generated test images ({len(data.captions)} captions)")
    print(f"{'runtime':<10} {'text->image R@1/5/10':>24} {'image->text R@1/5/10':>24}")
    for runtime, (backend, precision) in RUNTIMES.items():
        with Library(scratch / f"recall-{backend}-{precision}", create=True) as library:
            encoder = library.encoder(reference_spec(), device="cpu", backend=backend, precision=precision)
            recall = bench_recall(library, encoder, data).exact
        directions = (recall.text_to_image, recall.image_to_text)
        cells = [" / ".join(f"{hits[k]:.2f}" for k in (1, 5, 10)) for hits in directions]
        print(f"{runtime:<10}" + "".join(f"{cell:>25}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="photos per index run")
    parser.add_argument("--encode-images", type=int, default=64, help="preprocessed images for 'encode only'")
    parser.add_argument("--size", default="1600x1200", help="generated photo size WxH")
    parser.add_argument("--models", default="reference,ViT-B-32")
    parser.add_argument("--workers", default="2", help="decode worker counts to compare")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the best is shown")
    parser.add_argument("--recall-images", type=int, default=1000, help="0: no recall table")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's note about random weights
    width, height = (int(v) for v in args.size.split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} photos of {args.size}, "
          f"batch {args.batch_size}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        photos = scratch / "photos"
        make_photos(photos, args.images, (width, height))
        draft, full = time_decode(photos, 64), time_decode(photos, 64, min_side=max(width, height))
        print(f"decode only, 1 thread: {draft:.1f} images/s with draft mode, {full:.1f} full size\n")
        throughput_table(args, photos, scratch / "onnx")
        if args.recall_images:
            recall_table(args.recall_images, scratch)


if __name__ == "__main__":
    main()
