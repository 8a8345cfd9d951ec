"""What `find_duplicates` costs as a library grows, and what the IVF index's small nprobe loses.

Vectors: realistic synthetic CLIP-like image vectors (`retrieval.quality.synthetic_vectors`, 512-d, uneven
clusters, anisotropy), kept as the store keeps them (float16), where a share of the images are replaced by
near-duplicates of others (cosine uniform in 0.90..0.995 to their original, in a random direction).

1. Exact (flat) range search: the time per query on a sample, extrapolated to every vector (N queries of N
   vectors: quadratic).
2. The policy's IVF index (the one the library gets at this size), range search of every vector at several
   nprobe: time, and pair recall against exact search on a sample of queries (one-sided: a pair counts only
   if found from the sampled query; `find_duplicates` also finds it from the other side).
3. End to end: `find_duplicates` on a real library holding these vectors (SQLite rows, its saved IVF file).

    python benchmarks/duplicates_cost.py --vectors 100000 --sample 2000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from retrieval import Encoder, FileMetadata, Library, ModelSpec, RandomWeightsWarning, VectorIndex
from retrieval.config import DEFAULT_DUPLICATE_THRESHOLD, DUPLICATE_QUERY_BATCH
from retrieval.duplicates import duplicate_pairs, find_duplicates
from retrieval.index_policy import build_index, nlist_for
from retrieval.quality.synthetic_vectors import ClipLikeSpace
from retrieval.storage.vectors import as_stored

DIM = 512
CHUNK = 20_000
TINY_512 = {
    "embed_dim": DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def vectors_with_duplicates(count: int, share: float, seed: int) -> np.ndarray:
    """`count` float16-valued unit vectors; the last `share` of them near-duplicates of earlier ones."""
    vectors = ClipLikeSpace(dim=DIM, seed=seed).image_vectors(count)
    rng = np.random.default_rng(seed)
    copies = int(count * share)
    originals = rng.integers(0, count - copies, copies)
    noise = rng.standard_normal((copies, DIM)).astype(np.float32)
    base = vectors[originals]
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cosine = rng.uniform(0.90, 0.995, (copies, 1)).astype(np.float32)
    vectors[count - copies :] = cosine * base + np.sqrt(1 - cosine**2) * noise
    return as_stored(vectors)


def _pairs(index: VectorIndex, queries: np.ndarray, query_ids: np.ndarray, threshold: float, **kw: int) -> set:
    found: set[tuple[int, int]] = set()
    for start in range(0, len(queries), DUPLICATE_QUERY_BATCH):
        lims, _, ids = index.range_search(queries[start : start + DUPLICATE_QUERY_BATCH], threshold, **kw)
        owners = np.repeat(query_ids[start : start + DUPLICATE_QUERY_BATCH], np.diff(lims))
        found.update((int(a), int(b)) for a, b in zip(owners, ids, strict=True) if a != b)
    return found


def exact_part(vectors: np.ndarray, sample: np.ndarray, threshold: float) -> set:
    flat = VectorIndex(DIM, gpu="never")
    flat.add(np.arange(len(vectors)), vectors)
    started, cpu = time.perf_counter(), time.process_time()
    exact = _pairs(flat, vectors[sample], sample, threshold)
    per_query, cpu = (time.perf_counter() - started) / len(sample), (time.process_time() - cpu) / len(sample)
    count = len(vectors)
    print(
        f"exact (flat) range search: {per_query * 1e3:.2f} ms per query ({cpu * 1e3:.2f} ms CPU) at {count} vectors "
        f"-> all {count}: {per_query * count:.0f} s; at 1M (quadratic): {per_query * 1e12 / count / 3600:.1f} h"
    )
    return exact


def ivf_part(vectors: np.ndarray, sample: np.ndarray, exact: set, threshold: float, probes: list[int]) -> None:
    ids = np.arange(len(vectors))
    started = time.perf_counter()
    chunks = [(ids[start : start + CHUNK], vectors[start : start + CHUNK]) for start in range(0, len(ids), CHUNK)]
    ivf = build_index(DIM, len(vectors), chunks, gpu="never")
    print(f"IVF index ({ivf.kind}, nlist {nlist_for(len(vectors))}) built in {time.perf_counter() - started:.0f} s")
    print(f"{'nprobe':>7} {'all pairs: s':>13} {'CPU s':>7} {'pairs':>9} {'recall (sample)':>16}")
    for nprobe in probes:
        started, cpu = time.perf_counter(), time.process_time()
        first, _, _ = duplicate_pairs(ivf, threshold, nprobe=nprobe)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        found = _pairs(ivf, vectors[sample], sample, threshold, nprobe=nprobe)
        recall = len(found & exact) / max(1, len(exact))
        print(f"{nprobe:>7} {seconds:>13.1f} {cpu:>7.1f} {len(first):>9} {recall:>16.4f}")


def library_part(vectors: np.ndarray, threshold: float) -> None:
    """find_duplicates end to end on a library of these vectors (rows written as an index run writes them)."""
    with tempfile.TemporaryDirectory() as folder, Library(Path(folder) / "library", create=True) as library:
        config = Path(folder) / "tiny-512.json"
        config.write_text(json.dumps(TINY_512))
        encoder = Encoder(ModelSpec(str(config), "none"), device="cpu")  # 512-d: what the vectors stand for
        library.bind_model(encoder)
        started = time.perf_counter()
        for start in range(0, len(vectors), CHUNK):
            metas = [
                FileMetadata(f"/photos/{n:07d}.jpg", 1000 + n, n, f"h{n}", 640, 480)
                for n in range(start, start + CHUNK)
            ]
            with library.store.writer() as writer:
                writer.add_images(metas[: len(vectors) - start], vectors[start : start + CHUNK], encoder.identity.key)
        library.load_index(gpu="never")  # what the index run leaves: the saved file
        print(f"\nlibrary of {len(vectors)} rows and its IVF file written in {time.perf_counter() - started:.0f} s")
        started, cpu = time.perf_counter(), time.process_time()
        groups = find_duplicates(library, threshold)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"find_duplicates(threshold={threshold}): {len(groups)} groups, "
            f"{sum(len(g.members) for g in groups)} images, {seconds:.1f} s end to end ({cpu:.1f} s CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2000, help="queries for exact timing and pair recall")
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of images that are near-duplicates")
    parser.add_argument("--threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD)
    parser.add_argument("--nprobe", default="1,2,4,8,16")
    parser.add_argument("--no-library", action="store_true", help="leave out the end-to-end library run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    vectors = vectors_with_duplicates(args.vectors, args.duplicates, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    copies = int(args.vectors * args.duplicates)  # half the sample among the copies, whose pairs are known
    sample = np.unique(np.concatenate([
        rng.choice(args.vectors - copies, args.sample // 2, replace=False),
        rng.choice(np.arange(args.vectors - copies, args.vectors), args.sample // 2, replace=False),
    ]))  # fmt: skip
    exact = exact_part(vectors, sample, args.threshold)
    load = os.getloadavg()[0]
    print(f"exact pairs from the {len(sample)} sampled queries: {len(exact)} (load average {load:.1f})")
    ivf_part(vectors, sample, exact, args.threshold, [int(p) for p in args.nprobe.split(",")])
    if not args.no_library:
        library_part(vectors, args.threshold)


if __name__ == "__main__":
    main()
