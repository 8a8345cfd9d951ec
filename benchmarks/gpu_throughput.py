"""GPU indexing throughput (issue 9): photos/s for ViT-B-32 and ViT-L-14 on a CUDA device, by batch size and
by decode workers, so the table shows whether decoding or the GPU limits a whole `index` run.

    python benchmarks/gpu_throughput.py --out results/                       # CUDA, ~150 s on an H200
    python benchmarks/gpu_throughput.py --device cpu --quick --out /tmp/gpu  # dry run of every code path

Models run with seeded random weights (`pretrained` none): the same compute as real weights. Photos are
generated camera-like JPEGs (4000x3000 by default, with sensor-like noise, so files are megabytes and
decoding costs what it costs on real photos). Rows, per model:
- `encoder fp16, batch B`: `Encoder.encode_image_tensors` on preprocessed host tensors, as the indexer
  calls it (host-to-device copy, cast, encode, normalise, copy back);
- `model on GPU, batch B`: the image tower alone on tensors already on the device (the GPU's ceiling);
- `encoder fp32, batch B`: the same model in fp32, and the worst cosine between its and fp16's vectors;
- `index, W workers`: whole `index_folders` runs into a fresh library (scan, read, hash, decode,
  preprocess in W threads while the GPU encodes, SQLite and FAISS writes).
Once for all models (both take 224 px): `decode only, W workers`, the read+hash+decode+preprocess rate
with no model, i.e. the ceiling of an index run on this CPU. Results go to OUT/gpu_throughput.json,
rewritten after every cell, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_throughput import spec_for, time_encode, time_index  # a sibling script

from retrieval import Encoder, RandomWeightsWarning, read_and_decode

QUICK = {  # tiny sizes for a CPU dry run of every code path
    "models": "tiny",
    "photos": 24,
    "size": "800x600",
    "batch_sizes": "8,16",
    "encode_images": 32,
    "workers": "1,2",
    "index_batch": 8,
}


class Results:
    """Every measured cell, printed as it comes and kept in OUT/gpu_throughput.json."""

    def __init__(self, out: Path, setup: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "gpu_throughput.json"
        self.data: dict[str, Any] = {"setup": setup, "cells": []}
        self.save()

    def add(self, model: str, stage: str, rate: float, **extra: Any) -> None:
        self.data["cells"].append({"model": model, "stage": stage, "photos_per_s": round(rate, 1), **extra})
        notes = "  ".join(f"{key}={value}" for key, value in extra.items())
        print(f"{model:<10} {stage:<30} {rate:>10.1f}  {notes}", flush=True)
        self.save()

    def note(self, key: str, value: Any) -> None:
        self.data["setup"][key] = value
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def camera_photo(job: tuple[str, int, int, int]) -> int:
    """One photo-like JPEG: coloured shapes under full-resolution sensor-like noise (so the file has the
    entropy, and the decoder the work, of a real photo). Returns its size in bytes."""
    path, seed, width, height = job
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(256, size=3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        box = (x, y, x + int(rng.integers(50, width // 2)), y + int(rng.integers(50, height // 2)))
        fill = tuple(int(v) for v in rng.integers(256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    tile = rng.integers(-10, 11, size=(min(height, 512), min(width, 512), 3), dtype=np.int16)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    noise = np.roll(np.tile(tile, reps)[:height, :width], int(rng.integers(512)), axis=1)
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return os.path.getsize(path)


def make_camera_photos(folder: Path, count: int, size: tuple[int, int]) -> tuple[float, float]:
    """`count` photos in `folder`, made in parallel processes: (seconds, mean MB per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(str(folder / f"IMG_{n:05d}.jpg"), n, *size) for n in range(count)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(camera_photo, jobs, chunksize=4))
    return time.perf_counter() - started, sum(sizes) / len(sizes) / 1e6


def decode_rate(encoder: Encoder, files: list[Path], workers: int) -> float:
    """What the index pipeline's decoding threads do per file (read, hash, decode, preprocess), without a
    model: photos/s with `workers` threads, the ceiling of an index run on this CPU."""

    def prepare(path: Path) -> torch.Size:
        data, decoded = read_and_decode(str(path))
        hashlib.sha256(data).digest()
        return encoder.preprocess(decoded.image).shape

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(prepare, files))
    return len(files) / (time.perf_counter() - started)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_rate(encoder: Encoder, pixels: torch.Tensor, batch: int, repeat: int) -> float:
    """The image tower alone on a batch already on the device, in the encoder's dtype: best of `repeat`."""
    model = encoder._torch_model().model  # the loaded torch model (kept by a torch-backend encoder)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(encoder.precision, torch.float32)  # as Encoder does
    on_device = pixels.to(encoder.device, dtype)
    best = 0.0
    with torch.inference_mode():
        model.encode_image(on_device[:batch])
        for _ in range(repeat):
            sync(encoder.device)
            started = time.perf_counter()
            for start in range(0, len(on_device), batch):
                model.encode_image(on_device[start : start + batch])
            sync(encoder.device)
            best = max(best, len(on_device) / (time.perf_counter() - started))
    return best


def load_encoder(name: str, args: argparse.Namespace, precision: str, batch: int) -> tuple[Encoder, float]:
    started = time.perf_counter()
    encoder = Encoder(spec_for(name), device=args.device, backend="torch", precision=precision, batch_size=batch)
    encoder.load()
    sync(args.device)
    return encoder, time.perf_counter() - started


def host_pixels(encoder: Encoder, files: list[Path], count: int) -> torch.Tensor:
    """`count` preprocessed images (a few distinct photos, repeated: content does not change the compute)."""
    distinct = torch.stack([encoder.preprocess(read_and_decode(str(p))[1].image) for p in files[:16]])
    return distinct.repeat((count + len(distinct) - 1) // len(distinct), 1, 1, 1)[:count]


def encoder_rows(results: Results, name: str, encoder: Encoder, pixels: torch.Tensor, args: argparse.Namespace) -> None:
    label = encoder.precision
    for batch in args.batch_sizes:
        encoder.batch_size = batch
        wall, _cpu = time_encode(encoder, pixels, args.repeat)
        results.add(name, f"encoder {label}, batch {batch}", wall, batch=batch)
    for batch in args.batch_sizes:
        results.add(
            name,
            f"model on {encoder.device}, batch {batch}",
            model_rate(encoder, pixels, batch, args.repeat),
            batch=batch,
        )


def fp32_row(results: Results, name: str, fp16: Encoder, pixels: torch.Tensor, args: argparse.Namespace) -> None:
    """The same model in fp32 on the GPU: its rate at the largest batch, and how far fp16's vectors are
    (on the CPU, a dry run, both encoders are fp32)."""
    batch = max(args.batch_sizes)
    fp32, _ = load_encoder(name, args, "fp32", batch)
    wall, _cpu = time_encode(fp32, pixels[: 4 * batch], 1)  # fp32 is several times slower: fewer images
    sample = pixels[:64]
    cosines = np.sum(fp32.encode_image_tensors(sample) * fp16.encode_image_tensors(sample), axis=1)
    results.add(
        name,
        f"encoder fp32 vs {fp16.precision}, batch {batch}",
        wall,
        batch=batch,
        min_cosine_fp16_vs_fp32=round(float(cosines.min()), 5),
    )
    del fp32
    if args.device == "cuda":
        torch.cuda.empty_cache()


def index_rows(results: Results, name: str, encoder: Encoder, photos: Path, args: argparse.Namespace) -> None:
    encoder.batch_size = args.index_batch
    for workers in args.workers:
        rate = time_index(encoder, photos, workers, args.repeat)
        results.add(name, f"index, {workers} workers", rate, workers=workers, batch=args.index_batch)


def model_rows(results: Results, name: str, photos: Path, args: argparse.Namespace, *, decode_rows: bool) -> None:
    precision = "fp16" if args.device == "cuda" else "fp32"
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    encoder, seconds = load_encoder(name, args, precision, args.index_batch)
    results.note(f"load_seconds {name}", round(seconds, 1))
    files = sorted(photos.glob("*.jpg"))
    for workers in args.workers if decode_rows else ():  # once: every model here takes 224 px
        results.add("(any)", f"decode only, {workers} workers", decode_rate(encoder, files, workers), workers=workers)
    pixels = host_pixels(encoder, files, args.encode_images)
    encoder_rows(results, name, encoder, pixels, args)
    fp32_row(results, name, encoder, pixels, args)
    index_rows(results, name, encoder, photos, args)
    if args.device == "cuda":
        results.note(f"peak_gpu_memory_gb {name}", round(torch.cuda.max_memory_allocated() / 2**30, 2))
    del encoder


def limits(cells: list[dict[str, Any]], models: list[str]) -> list[str]:
    """One line per model and worker count: the index rate against the decode-only rate with as many
    workers and against the encoder's best rate, and which of the two it is closer to being held by."""
    rate = {(c["model"], c["stage"]): c["photos_per_s"] for c in cells}
    decode = {c.get("workers"): c["photos_per_s"] for c in cells if c["stage"].startswith("decode only")}
    lines = []
    for name in models:
        encode = max((r for (m, stage), r in rate.items() if m == name and stage.startswith("encoder ")), default=0.0)
        for workers, ceiling in decode.items():
            index = rate.get((name, f"index, {workers} workers"))
            if index is None or not ceiling or not encode:
                continue
            held = "decoding" if ceiling < encode else "the encoder"
            lines.append(
                f"{name}: index with {workers} workers {index:.0f}/s = {index / ceiling:.0%} of decode-only "
                f"({ceiling:.0f}/s), {index / encode:.0%} of the encoder's best ({encode:.0f}/s): {held} limits"
            )
    return lines


def setup_facts(args: argparse.Namespace) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "photos": args.photos,
        "photo_size": args.size,
        "index_batch": args.index_batch,
        "repeat": args.repeat,
    }
    return facts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_throughput.json")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--models", default="ViT-B-32,ViT-L-14")
    parser.add_argument("--photos", type=int, default=512, help="photos per index run")
    parser.add_argument("--size", default="4000x3000", help="generated photo size WxH")
    parser.add_argument("--batch-sizes", default="64,128,256,512", help="batch sizes for the encoder rows")
    parser.add_argument("--encode-images", type=int, default=2048, help="preprocessed images per encoder cell")
    parser.add_argument("--workers", default="4,8,16", help="decode worker counts")
    parser.add_argument("--index-batch", type=int, default=256, help="batch size of the index runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is kept")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tiny model, small photos): a dry run")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.models = args.models.split(",")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.simplefilter("ignore", RandomWeightsWarning)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's note about random weights
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch sees no CUDA device here; use --device cpu (with --quick for a dry run)")
    width, height = (int(v) for v in args.size.split("x"))
    results = Results(args.out, setup_facts(args))
    print(json.dumps(results.data["setup"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as folder:
        photos = Path(folder) / "photos"
        seconds, megabytes = make_camera_photos(photos, args.photos, (width, height))
        results.note("photo_generation_seconds", round(seconds, 1))
        results.note("photo_mean_mb", round(megabytes, 2))
        print(f"{args.photos} photos of {args.size} ({megabytes:.2f} MB each) made in {seconds:.1f} s", flush=True)
        if args.device == "cuda":  # only now: the photo processes were forked before CUDA started here
            results.note("gpu", torch.cuda.get_device_name(0))
        print(f"{'model':<10} {'stage':<30} {'photos/s':>10}", flush=True)
        for position, name in enumerate(args.models):
            started = time.perf_counter()
            model_rows(results, name, photos, args, decode_rows=position == 0)
            results.note(f"model_seconds {name}", round(time.perf_counter() - started, 1))
    summary = limits(results.data["cells"], args.models)
    results.note("limits", summary)
    print("\n".join(["", *summary]), flush=True)


if __name__ == "__main__":
    main()
