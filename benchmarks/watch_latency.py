"""How long after a file changes does a search see it, while `clipsearch watch` runs?

    nice -n 10 python benchmarks/watch_latency.py
    nice -n 10 python benchmarks/watch_latency.py --quiet-seconds 0.3 --repeats 20 --burst 200

Starts `clipsearch watch` as a child process (the real CLI; the packaged tiny random-weights model, which is
all latency needs) on a folder of `--images` generated PNGs, waits for its catch-up, then changes files one at
a time (`--repeats` each): adds one, rewrites one with new content, renames one into another folder, deletes
one; and then writes a burst of `--burst` new files at once. For each change it polls the public API in this
process, a fresh `Searcher` every `--poll` seconds (which reads the store and the FAISS file the watcher
saved), until the change shows in the results: the new path is found, the rewritten file shows its new
width, the old path is gone and the new one found, the deleted path is gone. Prints p50 / p95 / max seconds
per kind; for the burst, per file (from the end of its write) and until the whole burst was seen.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retrieval import Library, RandomWeightsWarning, Searcher, model_file

REPO = Path(__file__).resolve().parents[1]


def write_png(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> None:
    """Random colour blocks, distinct per seed, written in place."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle((x, y, x + 16, y + 16), fill=tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


class Seen:
    """What a fresh `Searcher` finds: every path (and its width) in the library."""

    def __init__(self, library_dir: Path) -> None:
        self.library_dir = library_dir

    def paths(self) -> dict[str, int | None]:
        with Library(self.library_dir, reading=True) as library, warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            searcher = Searcher(library, gpu="never")
            query = np.ones(library.dim() or 1, dtype=np.float32)
            hits = searcher.search_vector(query / np.linalg.norm(query), k=max(1, len(searcher.index)))
            return {hit.path: hit.width for hit in hits}


def wait_for(condition: Callable[[dict[str, int | None]], bool], seen: Seen, poll: float, timeout: float) -> float:
    """Seconds until `condition(paths)` held."""
    started = time.perf_counter()
    while not condition(seen.paths()):
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the change was not seen within the timeout")
        time.sleep(poll)
    return time.perf_counter() - started


def start_watch(root: Path, library_dir: Path, quiet: float) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-c",
        "from indexer.cli import main; main()",
        "watch",
        str(root),
        "--library",
        str(library_dir),
        "--model",
        str(model_file("tiny.json")),
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--quiet-seconds",
        str(quiet),
    ]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert child.stdout is not None
    for line in child.stdout:  # the catch-up line
        if "caught up with" in line:
            return child
    raise RuntimeError(f"watch ended before catching up (exit status {child.wait()})")


def single_changes(root: Path, seen: Seen, args: argparse.Namespace) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"add": [], "modify": [], "move": [], "delete": []}
    for turn in range(args.repeats):
        added = root / "new" / f"added{turn}.png"
        write_png(added, seed=10_000 + turn)
        times["add"].append(wait_for(lambda p, a=str(added): a in p, seen, args.poll, args.timeout))

        write_png(added, seed=20_000 + turn, size=(80, 64))
        times["modify"].append(wait_for(lambda p, a=str(added): p.get(a) == 80, seen, args.poll, args.timeout))

        moved = root / "moved" / f"moved{turn}.png"
        moved.parent.mkdir(exist_ok=True)
        os.rename(added, moved)
        times["move"].append(
            wait_for(lambda p, a=str(added), m=str(moved): m in p and a not in p, seen, args.poll, args.timeout)
        )

        moved.unlink()
        times["delete"].append(wait_for(lambda p, m=str(moved): m not in p, seen, args.poll, args.timeout))
    return times


def burst(root: Path, seen: Seen, args: argparse.Namespace) -> tuple[list[float], float]:
    """Per-file latencies (from the end of each file's write) and the time until the whole burst was seen."""
    written: dict[str, float] = {}
    started = time.perf_counter()
    for number in range(args.burst):
        path = root / "burst" / f"b{number:04d}.png"
        write_png(path, seed=30_000 + number)
        written[str(path)] = time.perf_counter()
    first_seen: dict[str, float] = {}
    deadline = time.perf_counter() + args.timeout
    while len(first_seen) < len(written):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(written) - len(first_seen)} burst files not seen within the timeout")
        paths, now = seen.paths(), time.perf_counter()
        first_seen.update((path, now) for path in written if path in paths and path not in first_seen)
        time.sleep(args.poll)
    return [first_seen[path] - written[path] for path in written], max(first_seen.values()) - started


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):>7.2f} {p95:>7.2f} {ordered[-1]:>7.2f} {len(ordered):>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images in the watched folder at the start")
    parser.add_argument("--repeats", type=int, default=10, help="times each single change is made")
    parser.add_argument("--burst", type=int, default=200, help="new files written at once")
    parser.add_argument("--quiet-seconds", type=float, default=1.0, help="passed to clipsearch watch")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between searches")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="watch-latency-"))
    root, library_dir = workdir / "photos", workdir / "library"
    for number in range(args.images):
        write_png(root / f"f{number // 50:02d}" / f"img{number:05d}.png", seed=number)
    child = start_watch(root, library_dir, args.quiet_seconds)
    try:
        seen = Seen(library_dir)
        times = single_changes(root, seen, args)
        per_file, whole = burst(root, seen, args)
    finally:
        child.send_signal(signal.SIGINT)
        status = child.wait(timeout=120)
    print(
        f"watch latency: {args.images} images, tiny model, --quiet-seconds {args.quiet_seconds}, "
        f"fresh Searcher every {args.poll}s; watch exited with status {status}"
    )
    print(f"{'change':<24} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'count':>6}")
    for kind, values in times.items():
        print(f"{kind + ' (one file)':<24} {percentiles(values)}")
    print(f"{f'burst of {args.burst}, per file':<24} {percentiles(per_file)}")
    print(f"{f'burst of {args.burst}, all seen':<24} {whole:>7.2f}")
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
