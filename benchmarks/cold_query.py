"""A cold `clipsearch search` and where its time goes, per model, on a library of synthetic vectors.

    nice -n 10 python benchmarks/cold_query.py --models tiny512,reference,ViT-B-32 --images 100000
    nice -n 10 python benchmarks/cold_query.py --models ViT-B-32 --images 20000 --workdir /tmp/cq --keep

For each model, a library is filled with `--images` synthetic CLIP-like vectors of the model's width through
the public store API (`Store.writer()`), bound to the model (random weights, except the packaged reference
model), its text tower exported to ONNX by one query, and its FAISS file built. Then, each in a fresh
process: `clipsearch search` (p50 of `--repeat`, wall and CPU), `clipsearch info`, `clipsearch --help`, and
one cold query through the Python API timed phase by phase (imports, opening the library, the encoder,
loading the index, the tokenizer, the ONNX session, encoding, searching), which also says whether torch or
open_clip was imported. `--keep` reuses a filled workdir. Run it with PYTHONPATH pointing at another checkout
to measure that code (the libraries are then made by it too: use another `--workdir`).

Models: `tiny512` is a tiny ViT with 512-d vectors (the issue's setting), `reference` the packaged reference
model (64-d), any open_clip name (`ViT-B-32`) runs with seeded random weights, which cost what real ones do.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from query_latency import metadata  # the same plausible rows as the 1M benchmark (this folder is on sys.path)

from retrieval import Library, ModelSpec, RandomWeightsWarning, reference_spec
from retrieval.quality.synthetic_vectors import ClipLikeSpace

TINY_512 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
QUERY = "a dog on the beach at sunset"
PHASES = """
import sys, time, warnings
warnings.simplefilter("ignore")
marks = [("start", time.perf_counter(), time.process_time())]
def mark(name): marks.append((name, time.perf_counter(), time.process_time()))
import indexer.cli; mark("import the CLI")
from retrieval.search import Searcher; mark("import search (store, faiss, encoder)")
from retrieval.library import Library
try:
    library = Library(sys.argv[1], reading=True)  # the light read path, where this checkout has one
except TypeError:
    library = Library(sys.argv[1])
mark("open the library")
encoder = library.encoder(); mark("the encoder (model checks)")
searcher = Searcher(library, encoder); mark("load the FAISS index")
import onnxruntime; mark("import onnxruntime")
tokenizer = encoder.onnx._query_tokenizer(); mark("the tokenizer")
encoder.onnx._tower("text"); mark("the ONNX text session")
vector = encoder.encode_texts([sys.argv[2]])[0]; mark("encode the query")
searcher.search_vector(vector, 10); mark("search and read the rows")
print(json.dumps({"phases": [(name, wall - marks[i][1], cpu - marks[i][2])
                             for i, (name, wall, cpu) in enumerate(marks[1:])],
                  "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules,
                  "sqlalchemy": "sqlalchemy" in sys.modules}))
"""


def spec_of(name: str, workdir: Path) -> ModelSpec:
    if name == "reference":
        return reference_spec()
    if name == "tiny512":
        config = workdir / "tiny-512.json"
        config.write_text(json.dumps(TINY_512))
        return ModelSpec(str(config), "none")
    return ModelSpec(name, "none")


def prepare(name: str, workdir: Path, images: int) -> Path:
    """The model's library under `workdir`, filled, exported and indexed (reused when already there)."""
    folder = workdir / name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    directory = folder / "library"
    if (folder / "ready").exists():
        return directory
    with Library(directory, create=True) as library:
        encoder = library.encoder(spec_of(name, folder), device="cpu")
        library.bind_model(encoder)
        space, key, position = ClipLikeSpace(dim=encoder.dim, seed=0), encoder.identity.key, 0
        for vectors, _ in space.images(images):
            with library.store.writer() as writer:
                metas = [metadata(number, images) for number in range(position, position + len(vectors))]
                writer.add_images(metas, vectors, key)
                position += len(vectors)
        encoder.encode_texts([QUERY])  # exports both towers into the library
        library.rebuild_index(gpu="never")
    (folder / "ready").touch()
    return directory


def run_timed(command: list[str], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds (the child's user + system) of `repeat` runs of `command`."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def clipsearch(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "clipsearch"
    base = [str(script)] if script.exists() else [sys.executable, "-c", "from indexer.cli import main; main()"]
    return [*base, *args]


def report(name: str, directory: Path, repeat: int) -> None:
    library = ["--library", str(directory)]
    rows = {
        f"cold `search` (p50 of {repeat})": run_timed(clipsearch("search", QUERY, *library), repeat),
        f"`info` (p50 of {repeat})": run_timed(clipsearch("info", *library), repeat),
        f"`--help` (p50 of {repeat})": run_timed(clipsearch("--help"), repeat),
    }
    phases = json.loads(
        subprocess.run(
            [sys.executable, "-c", "import json\n" + PHASES, str(directory), QUERY],
            cwd=directory,  # not the checkout: `python -c` puts the working folder first on sys.path
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    print(f"\n{name} (load {os.getloadavg()[0]:.1f})")
    for label, (wall, cpu) in rows.items():
        print(f"  {label:<40} {wall:6.3f} s wall  {cpu:6.3f} s CPU")
    imported = ", ".join(f"{module}: {phases[module]}" for module in ("torch", "open_clip", "sqlalchemy"))
    print(f"  one cold API query, by phase (imported {imported})")
    for label, wall, cpu in phases["phases"]:
        print(f"    {label:<38} {wall * 1000:7.1f} ms wall {cpu * 1000:7.1f} ms CPU")
    total_wall = sum(wall for _, wall, _ in phases["phases"])
    total_cpu = sum(cpu for _, _, cpu in phases["phases"])
    print(f"    {'total':<38} {total_wall * 1000:7.1f} ms wall {total_cpu * 1000:7.1f} ms CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny512,reference,ViT-B-32")
    parser.add_argument("--images", type=int, default=100_000, help="synthetic vectors per library")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="where the libraries go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir; kept libraries are reused")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cold-query-"))
    print(f"{args.images} images per library, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, in {workdir}")
    try:
        for name in args.models.split(","):
            report(name, prepare(name, workdir, args.images), args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
