"""Choosing the ANN index's constants: faiss measured directly on realistic synthetic CLIP-like vectors.

    nice -n 10 python benchmarks/ann_params.py --size 100000 --nlist 256,1024 --sq8 1024 --hnsw --filters 1024
    nice -n 10 python benchmarks/ann_params.py --size 100000 --samples 1024 --no-flat
    nice -n 10 python benchmarks/ann_params.py --size 1000000 --nlist 1024,4096 --sq8 4096 --filters 4096
    nice -n 10 python benchmarks/ann_params.py --scenes /tmp/scenes/test.jsonl --scenes-cache /tmp/scenes.npz

Each run prints markdown tables (docs/ann.md holds the results): exact flat latency; per index: train
(on a sample), add, bytes per vector, and recall@10 against exact for text-like and image-like queries
with the query p50 at batch 1 on 1 and 2 threads, as nprobe (efSearch) grows; the training-sample size;
filtered search (IDSelectorBatch vs IDSelectorBitmap) as the filter keeps fewer images; and the recall of
the chosen settings on real embeddings (generated scenes encoded by the reference model, queried with
their captions). Vectors come from `retrieval.quality.synthetic_vectors` (seeded: every run, the same).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.quality.synthetic_vectors import ClipLikeSpace

K = 10
LATENCY_QUERIES = 200
LATENCY_HEADER = ["p50 ms, CPU of 1 thread", "p50 ms wall, 1 thread", "p50 ms wall, 2 threads"]


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each exact top-k (ids >= 0) found in the approximate top-k."""
    pairs = zip(found, exact, strict=True)
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, int((e >= 0).sum())) for f, e in pairs]
    return float(np.mean(hits))


def p50_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray, threads: int) -> float:
    """Median wall time of one query at a time (batch 1) on `threads` threads."""
    faiss.omp_set_num_threads(threads)
    search(queries[:1])  # warm
    times = [timed(lambda q=q: search(q[None, :]))[0] for q in queries[:LATENCY_QUERIES]]
    faiss.omp_set_num_threads(2)
    return 1000 * float(np.median(times))


def cpu_p50_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> float:
    """Median CPU time of the calling thread per query, on 1 thread: what a query costs with the CPU to
    itself, unlike wall time on a machine that other jobs load (one faiss thread runs in the caller)."""
    faiss.omp_set_num_threads(1)
    search(queries[:1])
    times = []
    for query in queries[:LATENCY_QUERIES]:
        started = time.thread_time()
        search(query[None, :])
        times.append(time.thread_time() - started)
    faiss.omp_set_num_threads(2)
    return 1000 * float(np.median(times))


def bytes_per_vector(index: Any) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path) / max(1, index.ntotal)


class Workload:
    """Database vectors, text-like and image-like queries, and their exact top-k (the reference)."""

    def __init__(self, size: int, clusters: int, queries: int, cache: Path | None = None) -> None:
        space = ClipLikeSpace(clusters=clusters)
        stored = cache / f"vectors-{size}-{clusters}.npy" if cache else None
        if stored is not None and stored.exists():
            self.seconds_generate, self.vectors = timed(lambda: np.load(stored))
        else:
            self.seconds_generate, self.vectors = timed(lambda: space.image_vectors(size))
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                np.save(stored, self.vectors)
        self.text, _ = space.text_queries(queries, seed=1)
        self.image, _ = space.image_queries(queries, size, seed=1)
        self.flat = faiss.IndexFlatIP(space.dim)
        self.flat.add(self.vectors)
        exact = cache / f"exact-{size}-{clusters}-{queries}.npz" if cache else None
        if exact is not None and exact.exists():
            saved = np.load(exact)
            self.exact_text, self.exact_image = saved["text"], saved["image"]
        else:
            self.exact_text = self.flat.search(self.text, K)[1]
            self.exact_image = self.flat.search(self.image, K)[1]
            if exact is not None:
                np.savez(exact, text=self.exact_text, image=self.exact_image)

    def recalls(self, search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        return recall(search(self.text)[1], self.exact_text), recall(search(self.image)[1], self.exact_image)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n#### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


def flat_report(work: Workload) -> None:
    def search(q: np.ndarray) -> Any:
        return work.flat.search(q, K)

    queries = work.text[:30]  # a full scan per query: a few suffice
    rows = [
        ["IndexFlatIP (exact)", cpu_p50_ms(search, queries), p50_ms(search, queries, 1), p50_ms(search, queries, 2)]
    ]
    table(f"exact flat, N={work.flat.ntotal}", ["index", *LATENCY_HEADER], rows)


def build(work: Workload, factory: str, sample: int) -> tuple[Any, list[Any]]:
    """The index trained on the first `sample` vectors (a random sample: the chunks are i.i.d.) and filled."""
    index = faiss.index_factory(work.vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    train_s, _ = timed(lambda: index.train(work.vectors[:sample]) if not index.is_trained else None)
    add_s, _ = timed(lambda: index.add(work.vectors))
    return index, [factory, min(sample, len(work.vectors)), train_s, add_s, bytes_per_vector(index)]


def sweep(work: Workload, index: Any, knob: str, values: list[int], name: str) -> None:
    """Recall@10 (text, image) and p50 latencies at batch 1 per knob value."""
    rows = []
    for value in values:
        params = (
            faiss.SearchParametersHNSW(efSearch=value)
            if knob == "efSearch"
            else faiss.SearchParametersIVF(nprobe=value)
        )

        def search(q: np.ndarray, params: Any = params) -> Any:
            return index.search(q, K, params=params)

        text_r, image_r = work.recalls(search)
        latency = [cpu_p50_ms(search, work.text), p50_ms(search, work.text, 1), p50_ms(search, work.text, 2)]
        rows.append([value, text_r, image_r, *latency])
    table(f"{name}, N={index.ntotal}", [knob, "recall@10 text", "recall@10 image", *LATENCY_HEADER], rows)


SQ_KINDS = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "SQfp16": faiss.ScalarQuantizer.QT_fp16}


def ivf_report(
    work: Workload, nlists: list[int], sq: dict[str, list[int]], per_list: int, probes: list[int], keep: int
) -> Any:
    """IVF{nlist},Flat per nlist (and IVF{nlist},SQ8 / SQfp16 on the same trained lists where asked): cost and
    sweep.
    Returns the IVF{keep},Flat index if built (the others are freed: at 1M each holds 2 GB)."""
    built, rows = None, []
    for nlist in nlists:
        index, row = build(work, f"IVF{nlist},Flat", per_list * nlist)
        if nlist == keep:
            built = index
        rows.append(row)
        sweep(work, index, "nprobe", [p for p in probes if p <= nlist], row[0])
        for name, qtype in SQ_KINDS.items():
            if nlist not in sq[name]:
                continue
            quantized = faiss.IndexIVFScalarQuantizer(
                index.quantizer, index.d, nlist, qtype, faiss.METRIC_INNER_PRODUCT
            )
            quantized.by_residual = name != "SQfp16"  # as retrieval.index builds it: the store's float16 values
            sample = work.vectors[: per_list * nlist]
            train_s, _ = timed(lambda q=quantized, v=sample: q.train(v))
            add_s, _ = timed(lambda q=quantized: q.add(work.vectors))
            rows.append(
                [f"IVF{nlist},{name} (same lists)", per_list * nlist, train_s, add_s, bytes_per_vector(quantized)]
            )
            sweep(work, quantized, "nprobe", [p for p in probes if p <= nlist], f"IVF{nlist},{name}")
            del quantized
    header = ["index", "train sample", "train s (lists + codes)", "add s", "bytes/vector"]
    if rows:
        table(f"build cost, N={len(work.vectors)}", header, rows)
    return built


def sample_report(work: Workload, nlist: int, per_list: list[int], nprobe: int) -> None:
    rows = []
    for per in per_list:
        index, row = build(work, f"IVF{nlist},Flat", per * nlist)
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        rows.append([per, *row[1:3], *work.recalls(lambda q, i=index, p=params: i.search(q, K, params=p))])
    header = ["sample / nlist", "train sample", "train s", f"recall@10 text, nprobe {nprobe}", "recall@10 image"]
    table(f"training sample, IVF{nlist},Flat, N={len(work.vectors)}", header, rows)


def hnsw_report(work: Workload, efs: list[int]) -> None:
    index, row = build(work, "HNSW32", 0)
    table(f"build cost, N={len(work.vectors)}", ["index", "train sample", "train s", "add s", "bytes/vector"], [row])
    sweep(work, index, "efSearch", efs, "HNSW32")
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.arange(10, dtype=np.int64)))
        print("\nHNSW32 remove_ids: worked")
    except RuntimeError as exc:
        print(f"\nHNSW32 remove_ids: {str(exc).splitlines()[0][:160]}")


def selectors(allowed: np.ndarray, size: int) -> dict[str, Any]:
    mask = np.zeros(size, dtype=bool)
    mask[allowed] = True
    bits = np.packbits(mask, bitorder="little")
    bitmap = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bits))
    bitmap.keep_alive = bits  # faiss holds a raw pointer to the bits
    return {"Batch": faiss.IDSelectorBatch(allowed), "Bitmap": bitmap}


def filter_report(work: Workload, index: Any, fractions: list[float], probes: list[int]) -> None:
    """IVF with an id selector: recall of the filtered top-10 and p50 as nprobe grows, per selectivity."""
    nlist = index.nlist
    size, rows = len(work.vectors), []
    rng = np.random.default_rng(5)
    for fraction in fractions:
        allowed = np.sort(rng.choice(size, max(K, int(size * fraction)), replace=False)).astype(np.int64)
        exact = _exact_subset(work, allowed)
        numpy_ms = cpu_p50_ms(lambda q, a=allowed: _subset_top(q, work.vectors[a]), work.text)
        for kind, selector in selectors(allowed, size).items():
            flat = faiss.SearchParameters(sel=selector)
            flat_ms = cpu_p50_ms(lambda q, p=flat: work.flat.search(q, K, params=p), work.text)
            for nprobe in [p for p in probes if p <= nlist]:
                params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
                found = index.search(work.text, K, params=params)[1]
                ms = cpu_p50_ms(lambda q, p=params: index.search(q, K, params=p), work.text)
                rows.append(
                    [f"{fraction:.1%}", len(allowed), kind, nprobe, recall(found, exact), ms, flat_ms, numpy_ms]
                )
    header = [
        "keeps",
        "allowed",
        "selector",
        "nprobe",
        "recall@10 text",
        "p50 ms IVF",
        "p50 ms flat+sel",
        "p50 ms numpy",
    ]
    table(f"filtered search, IVF{nlist},Flat, N={size} (p50 ms: CPU of 1 thread)", header, rows)


def _subset_top(queries: np.ndarray, subset: np.ndarray) -> np.ndarray:
    scores = queries @ subset.T
    return np.argsort(-scores, axis=1)[:, :K]


def _exact_subset(work: Workload, allowed: np.ndarray) -> np.ndarray:
    top = _subset_top(work.text, work.vectors[allowed])
    return allowed[top]


def scene_vectors(captions_file: Path, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(image vectors, caption vectors) of generated scenes, encoded by the packaged reference model."""
    if cache is not None and cache.exists():
        saved = np.load(cache)
        return saved["images"], saved["captions"]
    from PIL import Image

    from retrieval import Encoder, reference_spec

    entries = [json.loads(line) for line in captions_file.read_text().splitlines() if line.strip()]
    encoder = Encoder(reference_spec(), device="cpu", batch_size=256)
    images = np.concatenate(
        [
            encoder.encode_images([Image.open(captions_file.parent / e["image"]).convert("RGB") for e in part])
            for part in (entries[start : start + 256] for start in range(0, len(entries), 256))
        ]
    )
    captions = encoder.encode_texts([c for e in entries for c in e["captions"]])
    if cache is not None:
        np.savez(cache, images=images, captions=captions)
    return images, captions


def scenes_report(images: np.ndarray, captions: np.ndarray, nlists: list[int], probes: list[int]) -> None:
    flat = faiss.IndexFlatIP(images.shape[1])
    flat.add(images)
    exact = flat.search(captions, K)[1]
    rows = []
    for nlist in nlists:
        index = faiss.index_factory(images.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(images)
        index.add(images)
        for nprobe in [p for p in probes if p <= nlist]:
            found = index.search(captions, K, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
            rows.append([nlist, len(images) // nlist, nprobe, f"{nprobe / nlist:.1%}", recall(found, exact)])
    header = ["nlist", "images/list", "nprobe", "lists probed", "recall@10 captions"]
    table(f"real embeddings: {len(images)} scenes, {len(captions)} captions, dim {images.shape[1]}", header, rows)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=0, help="database vectors (0: skip the synthetic part)")
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=500, help="text-like and image-like queries, each")
    parser.add_argument("--cache", type=Path, help="a folder to keep generated vectors and exact results in")
    parser.add_argument("--nlist", type=ints, default=[], help="IVF{nlist},Flat indexes to sweep")
    parser.add_argument("--nprobe", type=ints, default=[1, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--sample-per-list", type=int, default=64, help="training vectors per list")
    parser.add_argument("--no-flat", action="store_true", help="skip the exact flat latency")
    parser.add_argument("--sq8", type=ints, default=[], help="of those nlist, which to sweep as IVF{nlist},SQ8 too")
    parser.add_argument("--sqfp16", type=ints, default=[], help="of those nlist, which to sweep as IVF{nlist},SQfp16")
    parser.add_argument("--samples", type=int, default=0, help="nlist whose training-sample size to vary")
    parser.add_argument("--hnsw", action="store_true", help="HNSW32: build, efSearch sweep, remove_ids")
    parser.add_argument("--filters", type=int, default=0, help="nlist for filtered search (0: skip)")
    parser.add_argument("--fractions", default="0.001,0.01,0.1")
    parser.add_argument("--scenes", type=Path, help="a generated captions file (clipsearch generate-dataset)")
    parser.add_argument("--scenes-cache", type=Path, help="an .npz to keep the scenes' vectors in")
    parser.add_argument("--scenes-nlist", type=ints, default=[16, 64, 256])
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    print(f"faiss {faiss.__version__}, {os.cpu_count()} CPUs")
    if args.size:
        seconds, work = timed(lambda: Workload(args.size, args.clusters, args.queries, args.cache))
        print(f"\n{args.size} vectors: made in {work.seconds_generate:.1f} s, with exact top-{K}: {seconds:.1f} s")
        if not args.no_flat:
            flat_report(work)
        built = ivf_report(
            work, args.nlist, {"SQ8": args.sq8, "SQfp16": args.sqfp16}, args.sample_per_list, args.nprobe, args.filters
        )
        if args.samples:
            sample_report(work, args.samples, [8, 16, 39, 64, 128], 64)
        if args.hnsw:
            hnsw_report(work, [16, 32, 64, 128, 256])
        if args.filters:
            probes = sorted({*args.nprobe, args.filters})
            index = built or build(work, f"IVF{args.filters},Flat", 64 * args.filters)[0]
            filter_report(work, index, [float(f) for f in args.fractions.split(",")], probes)
    if args.scenes:
        scenes_report(*scene_vectors(args.scenes, args.scenes_cache), args.scenes_nlist, args.nprobe)


if __name__ == "__main__":
    main()
