"""Search latency of the FAISS index kinds on realistic synthetic CLIP-like vectors
(`retrieval.quality.synthetic_vectors`, text-like queries): build time, unfiltered and filtered query time
(one query at a time, warm), IVF recall against exact, and loading a saved file whole or memory-mapped.
Imports only the public index API; the store is not involved.

    python benchmarks/index_search.py --vectors 1000000 --dim 512 --filter-fraction 0.001
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from retrieval.filters import IdFilter
from retrieval.index import VectorIndex
from retrieval.index_policy import build_index
from retrieval.quality.synthetic_vectors import ClipLikeSpace


def timed(function: Callable[[], object]) -> float:
    """Wall seconds, or CPU seconds of this process with --cpu-time (what a shared machine's load leaves out)."""
    clock = time.process_time if CPU_TIME else time.perf_counter
    started = clock()
    function()
    return clock() - started


CPU_TIME = False


def per_query_ms(
    index: VectorIndex, queries: np.ndarray, k: int, make_filter: Callable[[], IdFilter | None]
) -> list[float]:
    """Milliseconds per single query, after one warm-up query; the filter is built inside the timing."""
    index.search(queries[:1], k, make_filter())
    return [1000 * timed(lambda q=q: index.search(q[None, :], k, make_filter())) for q in queries]


def spread(milliseconds: list[float]) -> str:
    return f"{statistics.median(milliseconds):.2f}/{np.percentile(milliseconds, 95):.2f}"


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b) - {-1}) / max(1, len(set(b) - {-1})) for a, b in zip(got, want, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--filter-fraction", type=float, default=0.001)
    parser.add_argument("--kinds", default="flat,ivf")
    parser.add_argument("--cpu-time", action="store_true", help="time with CPU seconds of this process, not wall")
    parser.add_argument("--query-threads", type=int, default=0, help="faiss threads while querying (0: its default)")
    args = parser.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu_time

    space = ClipLikeSpace(dim=args.dim)
    vectors = space.image_vectors(args.vectors).astype(np.float16).astype(np.float32)  # as the store keeps them
    ids = np.arange(args.vectors, dtype=np.int64) * 3 + 1
    rng = np.random.default_rng(1)
    text_like, _ = space.text_queries(args.queries, seed=1)  # another cone than the images, near none of them
    allowed = np.sort(rng.choice(ids, size=max(1, int(args.vectors * args.filter_fraction)), replace=False))

    rows, answers = [], {}
    holder: list[VectorIndex] = []
    for kind in args.kinds.split(","):
        batches = [(ids, vectors)]
        build = timed(
            lambda k=kind, b=batches: holder.append(build_index(args.dim, args.vectors, b, kind=k, gpu="never"))
        )
        index = holder.pop()
        threads = faiss.omp_get_max_threads()
        if args.query_threads:
            faiss.omp_set_num_threads(args.query_threads)
        plain = per_query_ms(index, text_like, args.k, lambda: None)
        filtered = per_query_ms(index, text_like, args.k, lambda: IdFilter.of(allowed))
        answers[kind] = (index.search(text_like, args.k)[1], index.search(text_like, args.k, IdFilter.of(allowed))[1])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "index.faiss"
            index.save(path)
            whole = timed(lambda p=path: VectorIndex.load(p, gpu="never"))
            mapped = timed(lambda p=path: VectorIndex.load(p, gpu="never", mmap=True))
        faiss.omp_set_num_threads(threads)
        rows.append((kind, build, plain, filtered, whole, mapped))
        del index

    print(f"{args.vectors} vectors, dim {args.dim}, k {args.k}, {args.queries} text-like queries, "
          f"filter keeps {len(allowed)} ids ({args.filter_fraction:.2%}); "
          f"{'CPU seconds of this process' if CPU_TIME else 'wall time'}, "
          f"{args.query_threads or 'default'} faiss threads for queries")  # fmt: skip
    print(f"{'kind':5} {'build s':>8} {'query ms p50/p95':>18} {'filtered ms p50/p95':>21} {'load s whole/mmap':>18}")
    for kind, build, plain, filtered, whole, mapped in rows:
        print(f"{kind:5} {build:8.1f} {spread(plain):>18} {spread(filtered):>21} {whole:8.2f}/{mapped:.3f}")
    if "flat" in answers and "ivf" in answers:
        print(f"IVF recall@{args.k} vs exact: unfiltered {recall(answers['ivf'][0], answers['flat'][0]):.4f}, "
              f"filtered {recall(answers['ivf'][1], answers['flat'][1]):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
