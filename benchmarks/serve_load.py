"""A bounded load test of `clipsearch serve` on loopback, while index runs add and remove images.

    nice -n 10 python benchmarks/serve_load.py                        # 2000 scenes, 1/8/32 clients, 15 s each
    nice -n 10 python benchmarks/serve_load.py --images 500 --seconds 5 --clients 1,8

Builds a library of generated scenes indexed with the packaged reference model (a `base` root that stays, and
a `churn` root), starts `clipsearch serve --port 0` as a subprocess, and runs one level per client count:
that many threads, each with its own keep-alive `http.client` connection, send `POST /api/search` for the
level's seconds, round robin over four kinds of query (text; text inside the base root; similar to an indexed
image by id; text fused with a negative text; relevance cutoff off, k results each). Meanwhile a writer thread
copies a batch of scenes into the churn root and runs `clipsearch index` on it, then deletes them and runs it
again, over and over; before and after each run it notes the store's generation and ids.

Counted per level: errors (any answer but 200, or none), short replies (fewer than k results: every query's
images number far more than k), torn replies (duplicate ids, scores out of order, or an id that was in the
library neither just before nor just after the index run during which the reply's generation was current:
ids are never reused, and each run only adds or only removes), stale replies (from a generation the store
had left STALE_AFTER seconds before the request: the server stopped following the store), latency
percentiles and throughput, the generations the store went through and how many the replies named, and
the CPU seconds the server used beside the load average (the machine may be shared). Exits 1 if any
error, short, torn or stale reply was seen.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval import Library
from retrieval.config import SERVE_RELOAD_INTERVAL, SERVE_RELOAD_SETTLE
from retrieval.model.reference import reference_files
from retrieval.quality.scene_dataset import generate_dataset

K = 24
TEXTS = ("three red circles", "a large yellow star", "a blue triangle", "two green crosses", "a small square")
NEGATIVES = ("red", "something green", "a striped background")
SERVE_START_SECONDS = 300
SEED = 12
STALE_AFTER = SERVE_RELOAD_INTERVAL + SERVE_RELOAD_SETTLE + 5
"""Seconds after which a reply from a generation older than the store's counts as stale: the server's reload
interval and settle time, and slack for a loaded machine."""


def clipsearch(*args: str) -> list[str]:
    """The command line of `clipsearch ARGS` with this Python."""
    return [sys.executable, "-c", "from indexer.cli import main; main()", *args]


def run_cli(*args: str) -> None:
    done = subprocess.run(clipsearch(*args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"clipsearch {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")


@dataclass
class Setup:
    """The library, its roots, the scenes the writer copies in and out, and the model options."""

    workdir: Path
    images: int
    churn: int

    def __post_init__(self) -> None:
        self.library = self.workdir / "library"
        self.base, self.churn_root, self.pool = (self.workdir / name for name in ("base", "churn", "pool"))
        config, checkpoint = reference_files()
        self.model = ["--model", str(config), "--pretrained", str(checkpoint), "--library", str(self.library)]

    def build(self) -> None:
        """Scenes into `base` (indexed) and `pool` (the writer's), unless a kept workdir has them."""
        if (self.library / "library.db").exists():
            return
        dataset = generate_dataset(self.workdir / "scenes", seed=SEED, sizes={"test": self.images + self.churn})
        files = sorted((dataset.folder / "images" / "test").iterdir())
        for folder, chosen in ((self.base, files[: self.images]), (self.pool, files[self.images :])):
            folder.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy2(path, folder / path.name)
        self.churn_root.mkdir(exist_ok=True)
        run_cli("index", str(self.base), str(self.churn_root), *self.model)


@dataclass
class History:
    """The store's (generation, ids) before and after each index run, in order (thread-safe)."""

    library_dir: Path
    root: Path
    snapshots: list[tuple[int, frozenset[int]]] = field(default_factory=list)
    noted_at: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self) -> None:
        """The store's generation and the ids under `root` now (call while no index run writes)."""
        with Library(self.library_dir, reading=True) as library:
            snapshot = (library.reads.generation(), frozenset(library.reads.ids_under(str(self.root)).tolist()))
        with self.lock:
            self.snapshots.append(snapshot)
            self.noted_at.append((time.perf_counter(), snapshot[0]))

    def stale(self, sent_at: float, generation: int) -> bool:
        """Whether the store had moved past `generation` at least STALE_AFTER seconds before the request was sent
        (a server should have loaded a newer generation by then)."""
        with self.lock:
            return any(noted < sent_at - STALE_AFTER and newer > generation for noted, newer in self.noted_at)

    def torn(self, generation: int, ids: list[int]) -> bool:
        """Whether an id of a reply at `generation` was in the store neither at the last snapshot at or before
        it nor at the first at or after it (between two, one index run only added or only removed)."""
        with self.lock:
            snapshots = sorted(self.snapshots, key=lambda snapshot: snapshot[0])
        generations = [snapshot[0] for snapshot in snapshots]
        after = bisect.bisect_left(generations, generation)
        before = bisect.bisect_right(generations, generation) - 1
        if before < 0 or after >= len(snapshots):
            return False  # outside what was observed: cannot tell
        alive = snapshots[before][1] | snapshots[after][1]
        return any(image_id not in alive for image_id in ids)


def churn(setup: Setup, history: History, stop: threading.Event, batch: int) -> None:
    """Until `stop`: copy `batch` pool scenes into the churn root and index it, then delete them and index it."""
    pool = sorted(setup.pool.iterdir())
    cycle = 0
    while not stop.is_set():
        chosen = [pool[(cycle * batch + i) % len(pool)] for i in range(batch)]
        for path in chosen:
            shutil.copy2(path, setup.churn_root / f"c{cycle}-{path.name}")
        for removing in (False, True):
            if removing:
                for path in setup.churn_root.iterdir():
                    path.unlink()
            run_cli("index", str(setup.churn_root), *setup.model)
            history.note()
        cycle += 1


def start_server(setup: Setup) -> tuple[subprocess.Popen[str], str, int]:
    """`clipsearch serve --port 0` on the library: the process, its host and port (from its first line)."""
    server = subprocess.Popen(
        clipsearch("serve", "--port", "0", *setup.model), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert server.stdout is not None
    line = server.stdout.readline()  # blocks until it serves (or dies)
    found = re.search(r"at http://([\d.]+):(\d+) ", line)
    if found is None:
        server.kill()
        raise RuntimeError(f"clipsearch serve did not start: {line!r}")
    return server, found[1], int(found[2])


def queries(base_root: Path, base_ids: list[int]) -> list[dict[str, Any]]:
    """The mix, each asking for K results that always exist: text, text in the base root, similar, fused."""
    mix: list[dict[str, Any]] = []
    for number, text in enumerate(TEXTS):
        negative = NEGATIVES[number % len(NEGATIVES)]
        mix += [
            {"parts": [{"text": text}], "k": K, "min_relevance": 0},
            {"parts": [{"text": text}], "k": K, "min_relevance": 0, "filter": {"within": [str(base_root)]}},
            {"parts": [{"image_id": base_ids[number * 7 % len(base_ids)]}], "k": K},
            {"parts": [{"text": text}, {"text": negative, "weight": -1}], "k": K, "min_relevance": 0},
        ]
    return mix


@dataclass
class Tally:
    """What the clients of one level saw (thread-safe appends)."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    short: int = 0
    disordered: int = 0
    replies: list[tuple[float, int, list[int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(host: str, port: int, mix: list[dict[str, Any]], start: int, deadline: float, tally: Tally) -> None:
    """Send the mix's queries, from the `start`-th on, until `deadline`; note each answer in `tally`."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    number = start
    while time.perf_counter() < deadline:
        body = json.dumps(mix[number % len(mix)]).encode()
        number += 1
        began = time.perf_counter()
        try:
            connection.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=30)
            with tally.lock:
                tally.errors.append(repr(exc))
            continue
        took = time.perf_counter() - began
        with tally.lock:
            tally.latencies.append(took)
            if response.status != 200:
                tally.errors.append(f"{response.status}: {data[:200]!r}")
                continue
        check_reply(json.loads(data), began, tally)
    connection.close()


def check_reply(reply: dict[str, Any], sent_at: float, tally: Tally) -> None:
    ids = [result["id"] for result in reply["results"]]
    scores = [result["score"] for result in reply["results"]]
    with tally.lock:
        tally.short += len(ids) < K
        tally.disordered += len(set(ids)) != len(ids) or any(a < b for a, b in itertools.pairwise(scores))
        tally.replies.append((sent_at, reply["generation"], ids))


def store_generation(library_dir: Path) -> int:
    with Library(library_dir, reading=True) as library:
        return library.reads.generation()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def level(
    clients: int, seconds: float, server: tuple[int, str, int], mix: list[dict[str, Any]], history: History
) -> Level:
    """One level: `clients` threads sending the mix for `seconds`."""
    pid, host, port = server
    tally = Tally()
    generation = store_generation(history.library_dir)
    cpu, began = cpu_of(pid), time.perf_counter()
    deadline = began + seconds
    threads = [threading.Thread(target=client, args=(host, port, mix, i * 3, deadline, tally)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Level(clients, tally, time.perf_counter() - began, cpu_of(pid) - cpu, os.getloadavg()[0], generation)


@dataclass
class Level:
    """One level's tally, with its wall time, the server's CPU seconds, the load average at its end and the
    store's generation at its start."""

    clients: int
    tally: Tally
    wall: float
    server_cpu: float
    load: float
    generation: int

    def row(self, history: History, next_generation: int) -> dict[str, Any]:
        """Its row of the table; judged once the writer has stopped (every reply's generation then lies
        between two snapshots)."""
        tally = self.tally
        torn = sum(history.torn(generation, ids) for _, generation, ids in tally.replies)
        stale = sum(history.stale(sent_at, generation) for sent_at, generation, _ in tally.replies)
        return {
            "clients": self.clients,
            "queries": len(tally.latencies),
            "errors": len(tally.errors),
            "short": tally.short,
            "torn": torn + tally.disordered,
            "stale": stale,
            "p50_ms": percentile(tally.latencies, 0.50) * 1000,
            "p95_ms": percentile(tally.latencies, 0.95) * 1000,
            "p99_ms": percentile(tally.latencies, 0.99) * 1000,
            "qps": len(tally.latencies) / self.wall,
            "generations": next_generation - self.generation,
            "served_generations": len({generation for _, generation, _ in tally.replies}),
            "server_cpu_s": self.server_cpu,
            "load": self.load,
            "first_errors": tally.errors[:3],
        }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| clients | queries | errors | short | torn | stale | p50 ms | p95 ms | p99 ms | queries/s | generations "
        "(store / in replies) | server CPU s | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['clients']} | {row['queries']} | {row['errors']} | {row['short']} | {row['torn']} | "
            f"{row['stale']} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {row['qps']:.1f} | "
            f"{row['generations']} / {row['served_generations']} | {row['server_cpu_s']:.1f} | {row['load']:.2f} |"
        )
        for error in row["first_errors"]:
            print(f"  error: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="scenes in the base root")
    parser.add_argument("--churn", type=int, default=200, help="scenes the writer copies in and deletes")
    parser.add_argument("--batch", type=int, default=40, help="scenes per index run of the writer")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=15.0, help="per level")
    parser.add_argument("--workdir", type=Path, default=None, help="kept and reused (default: a temporary one)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serve-load-"))
    setup = Setup(workdir, args.images, args.churn)
    started = time.perf_counter()
    setup.build()
    print(
        f"library of {args.images} scenes ready in {time.perf_counter() - started:.0f} s: {setup.library}",
        file=sys.stderr,
    )
    history = History(setup.library, setup.workdir.resolve())
    history.note()
    with Library(setup.library, reading=True) as library:
        base_ids = library.reads.ids_under(str(setup.base)).tolist()
    server, host, port = start_server(setup)
    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(setup, history, stop, args.batch), daemon=True)
    levels: list[Level] = []
    try:
        writer.start()
        mix = queries(setup.base, base_ids)
        for clients in (int(count) for count in args.clients.split(",")):
            levels.append(level(clients, args.seconds, (server.pid, host, port), mix, history))
            print(f"  {clients} clients done", file=sys.stderr)
    finally:
        stop.set()
        writer.join(timeout=300)
        server.terminate()
        server.wait(timeout=30)
    history.note()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    ends = [next_level.generation for next_level in levels[1:]] + [history.snapshots[-1][0]]
    rows = [done.row(history, end) for done, end in zip(levels, ends, strict=True)]
    print_table(rows)
    failed = any(row["errors"] or row["short"] or row["torn"] or row["stale"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
