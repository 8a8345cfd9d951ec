"""What indexing on Ray costs against a local run, on the same photos: images/s of `index_folders` (decode
threads, encoding in this process) and of `index_folders_on_ray` (decode tasks, encode actors, results
committed by this driver) into fresh libraries, side by side.

    python benchmarks/ray_overhead.py --images 300 --models tiny,reference
    python benchmarks/ray_overhead.py --address 10.0.0.5:6379         # an existing cluster's head

On a small machine the point is correctness and the overhead, not speed: Ray adds its object store, task
scheduling and pickled batches on the same cores. `--address auto` starts a local cluster with `--cpus`
CPUs (or joins the one RAY_ADDRESS or `ray start` names); its start-up is timed apart. Models: `tiny` is the
packaged tiny.json with random weights, `reference` the packaged reference model. Photos are generated
JPEGs, 1600x1200 by default. Encoders are loaded (and ONNX exports made) before the timing starts.
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from index_throughput import make_photos, spec_for  # the same photos and models as the throughput benchmark

from indexer import IndexReport, index_folders
from indexer.ray_index import RayOptions, import_ray, index_folders_on_ray, ray_session
from retrieval import Library, RandomWeightsWarning


@dataclass(frozen=True)
class Timing:
    """One run: images/s, seconds until its first batch was committed, seconds in all."""

    overall: float
    first_batch_s: float
    seconds: float


def timed_run(workdir: Path, name: str, model: str, batch_size: int, run: Callable[..., IndexReport]) -> Timing:
    """Index `workdir/photos` into a fresh library with `run` (model loading excluded from the timing)."""
    commits: list[float] = []
    with Library(workdir / f"{name}-{model}", create=True) as library:
        encoder = library.encoder(spec_for(model), device="cpu", batch_size=batch_size)
        encoder.load()
        started = time.perf_counter()
        report = run(
            library, encoder, [str(workdir / "photos")], progress=lambda *_: commits.append(time.perf_counter())
        )
    if report.failed:
        raise SystemExit(f"{name}: {report.failed} photos failed: {report.failures[:3]}")
    return Timing(report.images_per_second, commits[0] - started, report.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", default="1600x1200", help="photo size, WIDTHxHEIGHT")
    parser.add_argument("--models", default="tiny,reference")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="decode threads of the local run")
    parser.add_argument("--address", default="auto", help="Ray cluster: auto or a head's host:port")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster `--address auto` starts")
    parser.add_argument("--decode-batch-size", type=int, default=16)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore", RandomWeightsWarning)
    width, height = (int(side) for side in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as scratch:
        workdir = Path(scratch)
        make_photos(workdir / "photos", args.images, (width, height))
        ray = import_ray()
        started = time.perf_counter()
        if args.address == "auto" and not ray.is_initialized():
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        with ray_session(args.address):
            startup = time.perf_counter() - started
            nodes = len(ray.nodes())
            cpus = ray.cluster_resources().get("CPU", 0)
            options = RayOptions(args.address, decode_batch_size=args.decode_batch_size)

            on_ray = functools.partial(index_folders_on_ray, ray_options=options)
            local = functools.partial(index_folders, workers=args.workers)

            rows = []
            for model in args.models.split(","):
                for name, run in (("local", local), ("Ray", on_ray), ("Ray again", on_ray)):
                    rows.append((model, name, timed_run(workdir, f"{name}-{len(rows)}", model, args.batch_size, run)))

    print(f"{args.images} photos {args.size}, batch {args.batch_size}; cluster: {nodes} node(s), {cpus:g} CPUs, "
          f"connected in {startup:.1f}s (not in the rates)")  # fmt: skip
    print("'Ray again' is a second run from the same driver (its Ray workers already started, a new library).")
    print(f"{'model':<11}{'run':<11}{'img/s':>8}{'first batch s':>15}{'seconds':>9}{'vs local':>10}")
    local_rates = {model: timing.overall for model, name, timing in rows if name == "local"}
    for model, name, timing in rows:
        print(f"{model:<11}{name:<11}{timing.overall:>8.1f}{timing.first_batch_s:>15.1f}{timing.seconds:>9.1f}"
              f"{timing.overall / local_rates[model]:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
