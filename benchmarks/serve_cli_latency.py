"""`clipsearch search` answered by a running `clipsearch serve` against the same search run locally (cold).

    nice -n 10 python benchmarks/serve_cli_latency.py --library clipsearch-demo/library --query "three red circles"
    nice -n 10 python benchmarks/serve_cli_latency.py --synthetic 100000 --workdir /tmp/scl --keep

Each search is a fresh `clipsearch` process (what a user runs), timed as wall and CPU seconds (p50 of
--repeat), with the server and without (`--local`); the printed results are compared line for line. With
--synthetic N, a library of N synthetic CLIP-like 512-d vectors is made first (`fill_library`, bound to a tiny
512-d random-weights model, as benchmarks/query_latency.py does; text results are meaningless there, the
times are not). The server is started with `--port 0` and stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from retrieval import Encoder, Library, ModelSpec
from retrieval.quality.synthetic_vectors import ClipLikeSpace, fill_library

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_latency import metadata  # the same synthetic facts as the latency benchmark

TINY_512 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def clipsearch(*args: str) -> list[str]:
    return [sys.executable, "-c", "from indexer.cli import main; main()", *args]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_search(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one `clipsearch search ARGS` process."""
    wall, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(clipsearch("search", *args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clipsearch search failed: {done.stderr[-2000:]}")
    return time.perf_counter() - wall, children_cpu() - cpu, done.stdout


def p50(args: list[str], repeat: int) -> tuple[float, float, str]:
    runs = [timed_search(args) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]


def synthetic_library(workdir: Path, images: int) -> Path:
    """A library of `images` synthetic vectors (kept and reused in `workdir`)."""
    config = workdir / "tiny-512.json"
    config.write_text(json.dumps(TINY_512))
    with Library(workdir / "library", create=True) as library:
        encoder = Encoder(ModelSpec(str(config), "none"), device="cpu")
        fill_library(library, encoder, ClipLikeSpace(seed=0), images, lambda i: metadata(i, images))
        library.rebuild_index()
        return library.directory


def start_server(library: Path) -> tuple[subprocess.Popen[str], float]:
    started = time.perf_counter()
    server = subprocess.Popen(
        clipsearch("serve", "--library", str(library), "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not re.match(r"serving .* at http://", line):
        server.kill()
        raise RuntimeError(f"clipsearch serve did not start: {line!r}")
    return server, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=Path, default=None)
    parser.add_argument("--synthetic", type=int, default=0, help="make a library of this many synthetic vectors")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--query", default="a dog on the beach at sunset")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serve-cli-"))
    workdir.mkdir(parents=True, exist_ok=True)
    library = args.library or synthetic_library(workdir, args.synthetic)
    search = [args.query, "--library", str(library), "-k", "10", "--min-relevance", "0"]
    timed_search([*search, "--local"])  # the first run exports or checks the ONNX towers: not what is timed
    local = p50([*search, "--local"], args.repeat)
    server, start = start_server(library)
    try:
        served = p50(search, args.repeat)
    finally:
        server.terminate()
        server.wait(timeout=60)
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    with Library(library, reading=True) as opened:
        images = opened.reads.count_vectors()
    print(f"library: {library} ({images} images); server ready in {start:.1f} s")
    print("| `clipsearch search` | wall s (p50) | CPU s (p50) |")
    print("|---|---|---|")
    print(f"| local, cold (`--local`) | {local[0]:.2f} | {local[1]:.2f} |")
    print(f"| through the warm server | {served[0]:.2f} | {served[1]:.2f} |")
    same = local[2] == served[2]
    print(f"same output: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
