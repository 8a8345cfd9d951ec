"""The large-library index measured at any size: recall, memory, disk, build time and latency.

    nice -n 10 python benchmarks/large_index.py --size 1000000 --nlist 1024 --codes PQ64,PQ128,SQ8 --rerank 10,50
    nice -n 10 python benchmarks/large_index.py --size 10000000 --nlist 1024 --codes PQ64 --rerank 10,50,100
    python benchmarks/large_index.py --size 100000000 --codes PQ128 --workers 32 --workdir /mnt/big  # a big machine
    python benchmarks/large_index.py --cpu-costs
    python benchmarks/large_index.py --store ~/.local/share/clipsearch/default

Vectors are `retrieval.quality.synthetic_vectors` (CLIP-like, 512-d), kept as a float16 .npy memory map in
`--workdir` (2 bytes x 512 per vector; a file of at least `--size` rows is reused, its first rows taken).
The exact top-10 of each query is found by streaming that file in chunks (never all of it in float32).
Per codes: train (k-means for the lists, then the codes, on 40 vectors per list, at least 65 536), add in shards by
`--workers` processes, merge on disk (`merge_ondisk`), write one file, map it read-only, then per nprobe:
recall@10 against exact over text-like and image-like queries, and one-thread latency p50/p95, with and
without exact re-ranking of `--rerank` x k candidates (factors, comma-separated) against the float16 vectors
(read from the memmap). `--cpu-costs` times the build's steps per million vectors on one thread; `--store
LIBRARY` times the store's `vectors_by_ids`, the re-ranking's read.
Prints markdown tables; `--json` appends every row to a JSON-lines file as it is measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.config import IVF_TRAIN_POINTS_PER_LIST, LARGE_PQ_TRAIN_POINTS
from retrieval.index import VectorIndex
from retrieval.index_policy import nlist_for
from retrieval.large_index import (
    Spool,
    VectorSource,
    add_in_shards,
    memmap_source,
    merge_shards,
    rerank,
    sample,
    train_large,
    write_streamed,
)
from retrieval.quality.synthetic_vectors import ClipLikeSpace

K = 10
GT_CHUNK = 262_144


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rss() -> dict[str, float]:
    """This process's resident memory in MB: total, anonymous, file-backed (mapped files)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def vectors_file(workdir: Path, size: int, space: ClipLikeSpace) -> Path:
    """A float16 .npy of at least `size` rows in `workdir` (an existing larger one is reused)."""
    for found in sorted(workdir.glob("vectors-*.npy")):
        if int(found.stem.split("-")[1]) >= size:
            return found
    path = workdir / f"vectors-{size}.npy"
    out = np.lib.format.open_memmap(workdir / "vectors.part.npy", mode="w+", dtype=np.float16, shape=(size, space.dim))
    start = 0
    for vectors, _ in space.images(size):
        out[start : start + len(vectors)] = vectors
        start += len(vectors)
    out.flush()
    del out
    (workdir / "vectors.part.npy").rename(path)
    return path


def exact_top(path: Path, size: int, queries: np.ndarray) -> np.ndarray:
    """Exact top-K ids of each query among the first `size` rows, streaming GT_CHUNK rows at a time."""
    vectors = np.load(path, mmap_mode="r")
    best_d = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), K), -1, dtype=np.int64)
    for start in range(0, size, GT_CHUNK):
        chunk = np.asarray(vectors[start : min(size, start + GT_CHUNK)], dtype=np.float32)
        scores = queries @ chunk.T
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        all_d = np.concatenate([best_d, np.take_along_axis(scores, top, axis=1)], axis=1)
        all_i = np.concatenate([best_i, top + start], axis=1)
        order = np.argsort(-all_d, axis=1)[:, :K]
        best_d, best_i = np.take_along_axis(all_d, order, axis=1), np.take_along_axis(all_i, order, axis=1)
    return best_i


def exact_answers(args: argparse.Namespace, text: np.ndarray, image: np.ndarray) -> dict[str, tuple[Any, Any]]:
    """Each query kind's (queries, exact top-K), computed by streaming once and kept in `--workdir`."""
    cache = args.workdir / f"exact-{args.size}-{args.queries}.npz"
    if cache.exists():
        saved = np.load(cache)
        return {"text": (text, saved["text"]), "image": (image, saved["image"])}
    started = time.perf_counter()
    both = exact_top(args.vectors_path, args.size, np.concatenate([text, image]))
    log(f"exact top-{K} of {2 * args.queries} queries by streaming: {time.perf_counter() - started:.1f} s")
    np.savez(cache, text=both[: len(text)], image=both[len(text) :])
    return {"text": (text, both[: len(text)]), "image": (image, both[len(text) :])}


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(e.tolist())) / K for f, e in zip(found, exact, strict=True)]))


def latencies(
    index: VectorIndex, queries: np.ndarray, factor: int, source: VectorSource
) -> tuple[np.ndarray, list[float], list[float]]:
    """Found ids, and wall and thread-CPU ms of each query searched alone on one faiss thread; with `factor`,
    `factor` x K candidates re-ranked exactly from `source` (as a large index with a vector source does)."""

    def search(query: np.ndarray) -> np.ndarray:
        if not factor:
            return index.search(query, K)[1]
        _, candidates = index.search(query, K * factor)
        return rerank(query, candidates, source, K)[1]

    faiss.omp_set_num_threads(1)
    search(queries[:1])
    found, wall, cpu = [], [], []
    for query in queries:
        started, started_cpu = time.perf_counter(), time.thread_time()
        ids = search(query[None, :])
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.thread_time() - started_cpu))
        found.append(ids[0])
    return np.array(found), wall, cpu


def build(args: argparse.Namespace, codes: str, source: Spool, training: np.ndarray, quantizer: Any) -> dict:
    folder = args.workdir / f"build-{args.size}-{codes}"
    folder.mkdir(exist_ok=True)
    row: dict[str, Any] = {"size": args.size, "nlist": args.nlist, "codes": codes, "workers": args.workers}
    started = time.perf_counter()
    trained = train_large(source_dim(source), args.nlist, training, codes, quantizer)
    row["train_codes_s"] = time.perf_counter() - started
    started = time.perf_counter()
    shards = add_in_shards(trained, source, folder, workers=args.workers, shard=args.shard)
    row["add_s"] = time.perf_counter() - started
    started = time.perf_counter()
    merged = merge_shards(trained, shards, folder / "merged.ivfdata")
    row["merge_s"] = time.perf_counter() - started
    started = time.perf_counter()
    final = folder / "index.faiss"
    with open(final, "wb") as handle:
        write_streamed(merged, handle.write)
    row["write_s"] = time.perf_counter() - started
    row["file_bytes_per_vector"] = final.stat().st_size / args.size
    row["shard_bytes"] = sum(path.stat().st_size for path in shards)
    del merged, trained
    for path in [*shards, folder / "merged.ivfdata", folder / "trained.faiss"]:
        path.unlink(missing_ok=True)
    return row


def source_dim(source: Spool) -> int:
    return int(np.load(source.vectors, mmap_mode="r").shape[1])


def measure(args: argparse.Namespace, row: dict, queries: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    """Map the built file read-only and measure recall and latency per nprobe, with and without re-ranking."""
    final = args.workdir / f"build-{args.size}-{row['codes']}" / "index.faiss"
    before = rss()
    index = VectorIndex.load(final, gpu="never", mmap=True)
    row["rss_after_load_mb"] = rss()["VmRSS"] - before["VmRSS"]
    source = memmap_source(args.vectors_path)
    rows = []
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        for factor in [0, *args.rerank]:
            out = dict(row, nprobe=nprobe, rerank=factor)
            for name, (matrix, exact) in queries.items():
                found, wall, cpu = latencies(index, matrix, factor, source)
                out[f"recall_{name}"] = recall(found, exact)
                out[f"p50_ms_{name}"], out[f"p95_ms_{name}"] = np.percentile(wall, 50), np.percentile(wall, 95)
                out[f"cpu_p50_ms_{name}"] = float(np.median(cpu))
            out["rss_mb"] = rss()
            rows.append(out)
            log(json.dumps(out, default=float))
            if args.json:
                with open(args.json, "a") as handle:
                    handle.write(json.dumps(out, default=float) + "\n")
    return rows


def print_tables(builds: list[dict], rows: list[dict]) -> None:
    print("\n| codes | nlist | k-means s | train codes s | add s (workers) | merge s | write s | file bytes/vector |")
    print("|---|---|---|---|---|---|---|---|")
    for b in builds:
        print(
            f"| {b['codes']} | {b['nlist']} | {b['kmeans_s']:.1f} | {b['train_codes_s']:.1f} | "
            f"{b['add_s']:.1f} ({b['workers']}) | {b['merge_s']:.1f} | {b['write_s']:.1f} | "
            f"{b['file_bytes_per_vector']:.1f} |"
        )
    print("\n| codes | nprobe | rerank | recall@10 text | recall@10 image | p50/p95 ms text | CPU p50 ms text "
          "| p50/p95 ms image | RSS MB (anon/file) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        memory = r["rss_mb"]
        print(
            f"| {r['codes']} | {r['nprobe']} | {r['rerank'] * K or '-'} | {r['recall_text']:.3f} | "
            f"{r['recall_image']:.3f} | {r['p50_ms_text']:.2f} / {r['p95_ms_text']:.2f} | "
            f"{r['cpu_p50_ms_text']:.2f} | {r['p50_ms_image']:.2f} / {r['p95_ms_image']:.2f} | "
            f"{memory['VmRSS']:.0f} ({memory['RssAnon']:.0f}/{memory['RssFile']:.0f}) |"
        )


def store_reads(library: Path, dim: int, counts: list[int], repeats: int = 30) -> None:
    """What re-ranking costs on the store side: `vectors_by_ids` of `count` random ids of a library's SQLite
    file, through the light reader (searches) and the SQLAlchemy store, p50/p95 ms over `repeats` reads."""
    from retrieval.storage.reader import open_reader
    from retrieval.storage.store import Store

    reader = open_reader(library / "library.db")
    store = Store(f"sqlite:///{library / 'library.db'}")
    assert reader is not None, "not a library file the light reader can read"
    high = int(reader._connection.execute("SELECT max(id) FROM images").fetchone()[0])
    rng = np.random.default_rng(0)
    print(f"\n| ids read ({reader.count_vectors()} rows) | reader p50 / p95 ms | Store p50 / p95 ms |")
    print("|---|---|---|")
    for count in counts:
        cells = []
        for reads in (reader, store):
            times = []
            for _ in range(repeats):
                wanted = np.sort(rng.choice(high, size=count, replace=False) + 1)
                started = time.perf_counter()
                found, _ = reads.vectors_by_ids(wanted, dim)
                times.append(1000 * (time.perf_counter() - started))
            cells.append(f"{np.percentile(times, 50):.2f} / {np.percentile(times, 95):.2f}")
        print(f"| {count} ({len(found)} found) | {cells[0]} | {cells[1]} |", flush=True)
    reader.close()
    store.close()


def cpu_costs(path: Path, count: int = 50_000, dim: int = 512) -> None:
    """CPU seconds (one faiss thread, process CPU time: what a core-to-itself costs, whatever the load) of the
    build's steps per million vectors: assigning to nlist lists and adding with PQ codes. Centroids are
    random (the cost does not depend on their values), so nothing has to be trained first."""
    faiss.omp_set_num_threads(1)
    vectors = np.asarray(np.load(path, mmap_mode="r")[:count], dtype=np.float32)
    rng = np.random.default_rng(0)
    print("\n| step | CPU s per 1M vectors, 1 thread |\n|---|---|")
    for nlist in (1024, 4096, 16384):
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(rng.standard_normal((nlist, dim), dtype=np.float32))
        started = time.process_time()
        quantizer.search(vectors, 1)
        print(f"| assign to {nlist} lists (flat quantizer) | {(time.process_time() - started) * 1e6 / count:.1f} |")
        for m in (64, 128):
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            faiss.copy_array_to_vector(rng.standard_normal(256 * dim).astype(np.float32), index.pq.centroids)
            index.is_trained = True
            started = time.process_time()
            index.add(vectors)
            print(f"| add with PQ{m} codes, {nlist} lists (assign + encode) | "
                  f"{(time.process_time() - started) * 1e6 / count:.1f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--nlist", type=int, default=0, help="lists (default: the library's rule, 4 sqrt(N))")
    parser.add_argument("--codes", default="PQ64", help="comma-separated: PQ<m> and/or SQ8")
    parser.add_argument("--nprobe", default="16,32,64,128", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument(
        "--rerank", default="10", type=lambda v: [int(x) for x in v.split(",")], help="re-rank factors x k"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard", type=int, default=1_000_000, help="vectors per shard")
    parser.add_argument("--queries", type=int, default=200, help="text-like and as many image-like queries")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bigindex"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--store", type=Path, default=None, help="a library folder: time its vectors_by_ids only")
    parser.add_argument("--cpu-costs", action="store_true", help="CPU time of the build's steps only")
    args = parser.parse_args()
    if args.store:
        store_reads(args.store, 512, [100, 500, 1000])
        return
    if args.cpu_costs:
        cpu_costs(vectors_file(args.workdir, args.size, ClipLikeSpace()))
        return
    args.nlist = args.nlist or nlist_for(args.size)
    args.workdir.mkdir(parents=True, exist_ok=True)
    space = ClipLikeSpace()
    started = time.perf_counter()
    args.vectors_path = vectors_file(args.workdir, args.size, space)
    log(f"vectors {args.vectors_path} ready in {time.perf_counter() - started:.1f} s")
    text, _ = space.text_queries(args.queries, seed=1)
    image, _ = space.image_queries(args.queries, args.size, seed=1)
    if not args.codes:
        exact_answers(args, text, image)
        return
    source = Spool(args.vectors_path, None, args.size)
    training = sample(source, max(IVF_TRAIN_POINTS_PER_LIST * args.nlist, LARGE_PQ_TRAIN_POINTS))
    quantizer = faiss.IndexFlatIP(space.dim)
    started = time.perf_counter()
    faiss.IndexIVFFlat(quantizer, space.dim, args.nlist, faiss.METRIC_INNER_PRODUCT).train(training)
    kmeans_s = time.perf_counter() - started  # the lists' k-means, as the library's IVF trains them
    log(f"k-means: {args.nlist} lists on {len(training)} vectors in {kmeans_s:.1f} s")
    builds, rows = [], []
    for codes in args.codes.split(","):
        row = build(args, codes, source, training, quantizer)
        row["kmeans_s"] = kmeans_s
        log(json.dumps(row, default=float))
        builds.append(row)
        rows += measure(args, row, exact_answers(args, text, image))  # after the build: another run may have made them
    print_tables(builds, rows)


if __name__ == "__main__":
    main()
