"""The store's size and the cost of its counts: bytes of library.db (and of the FAISS file) per image, and how
long `Store.count_vectors()` and `Store.stats()` take, on a synthetic library of random unit vectors.

    python benchmarks/store_size.py --rows 20000 --dim 512
    python benchmarks/store_size.py --rows 200000 --dim 512 --repeat 3

Rows are written the way an index run writes them (batches of `--batch` in one transaction each), with
photo-like paths, sizes and dates. Run it against an older checkout (PYTHONPATH) to compare formats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from retrieval import FileMetadata, Library, VectorIndex


def fill(library: Library, rows: int, dim: int, batch: int) -> float:
    """Write `rows` images; returns the seconds it took."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for first in range(0, rows, batch):
        count = min(batch, rows - first)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with library.store.writer() as writer:
            for offset, vector in enumerate(vectors):
                number = first + offset
                meta = FileMetadata(
                    path=f"/home/someone/Pictures/{2010 + number % 15}/{number % 97:02d}/IMG_{number:07d}.jpg",
                    size=int(rng.integers(200_000, 8_000_000)),
                    mtime_ns=1_600_000_000_000_000_000 + number,
                    content_hash=f"{number:064x}",
                    width=4032,
                    height=3024,
                    format="JPEG",
                    taken_at=datetime(2010, 1, 1) + timedelta(hours=number),
                    camera_make="Maker",
                    camera_model="Model X",
                )
                writer.upsert_image(meta, vector, "model-key")
    return time.perf_counter() - started


def best_of(repeat: int, action: object) -> tuple[float, float]:
    """(first call, best of `repeat`) in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return times[0], min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder) / "library"
        with Library(directory, create=True) as library:
            seconds = fill(library, args.rows, args.dim, args.batch)
            index = VectorIndex(args.dim, gpu="never")
            with library.store.vector_snapshot(args.dim) as (_generation, batches):
                for ids, vectors in batches:
                    index.add(ids, vectors)
            index.save(directory / "sized.faiss")
        database = directory / "library.db"
        faiss_files = list(directory.glob("*.faiss"))
        db_bytes, faiss_bytes = database.stat().st_size, sum(path.stat().st_size for path in faiss_files)
        with Library(directory) as library:
            count = best_of(args.repeat, library.store.count_vectors)
            stats = best_of(args.repeat, library.store.stats)
            assert library.store.count_vectors() == args.rows
    rows = args.rows
    print(f"{rows} rows of {args.dim}-d, written in {seconds:.1f}s")
    print(f"{'what':<28}{'bytes':>14}{'bytes/image':>14}")
    for name, size in (("library.db", db_bytes), ("FAISS file", faiss_bytes), ("both", db_bytes + faiss_bytes)):
        print(f"{name:<28}{size:>14,}{size / rows:>14,.0f}")
    print(f"{'call':<28}{'first ms':>14}{'best ms':>14}")
    for name, (first, best) in (("count_vectors()", count), ("stats()", stats)):
        print(f"{name:<28}{first:>14.1f}{best:>14.1f}")


if __name__ == "__main__":
    main()
