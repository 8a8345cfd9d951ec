"""`clipsearch demo`: the main job end to end, offline, with the project's reference model.

Generates a set of captioned scenes, indexes it into a demo library with the reference model, runs text
and image queries, and measures recall@k on the set through the engine. Everything lands in one folder,
and running it again reuses what is there (the indexer re-embeds nothing that did not change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from indexer.bench_recall import RecallBenchReport, bench_recall
from indexer.pipeline import IndexReport, ProgressCallback, index_folders
from retrieval.config import DEFAULT_DEMO_FOLDER, DEFAULT_DEMO_IMAGES, DEFAULT_DEMO_K
from retrieval.library import Library
from retrieval.model.reference import reference_spec
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.search import Searcher, SearchResult

DEMO_SPLIT = "test"
DEMO_SEED = 2026
DEMO_TEXT_QUERIES = (
    "three red circles",
    "a large yellow star on a striped background",
    "small white squares at the top",
    "two green crosses on the left of a dotted black background",
    "a blue triangle",
)


@dataclass(frozen=True)
class Hit:
    result: SearchResult
    caption: str  # the generator's first caption of the image found: what it really shows


@dataclass
class DemoReport:
    folder: Path
    library: Path
    images: int
    indexing: IndexReport
    text_queries: list[tuple[str, list[Hit]]]
    image_query: tuple[str, str, list[Hit]]
    recall: RecallBenchReport


def run_demo(
    folder: str | Path | None = None,
    *,
    images: int = DEFAULT_DEMO_IMAGES,
    k: int = DEFAULT_DEMO_K,
    progress: ProgressCallback | None = None,
) -> DemoReport:
    """Run the demo in `folder` (default: DEFAULT_DEMO_FOLDER under the current folder) on `images` scenes,
    showing `k` results per query."""
    root = Path(folder or DEFAULT_DEMO_FOLDER).expanduser()
    spec = reference_spec()
    dataset = generate_dataset(root / "scenes", seed=DEMO_SEED, sizes={DEMO_SPLIT: images})
    captions_file = dataset.split_file(DEMO_SPLIT)
    first_caption = {
        str((root / "scenes" / record["image"]).resolve()): record["captions"][0]
        for record in map(json.loads, captions_file.read_text().splitlines())
    }
    with Library(root / "library", create=True) as library:
        encoder = library.encoder(spec)
        indexing = index_folders(library, encoder, [str(root / "scenes" / "images")], progress=progress)
        searcher = Searcher(library, encoder)

        def hits(results: list[SearchResult]) -> list[Hit]:
            return [Hit(result, first_caption.get(str(Path(result.path).resolve()), "?")) for result in results]

        text_queries = [(query, hits(searcher.search_text(query, k))) for query in DEMO_TEXT_QUERIES]
        example = sorted(first_caption)[0]
        image_query = (example, first_caption[example], hits(searcher.search_image(example, k)))
    with Library(root / "bench-library", create=True) as bench_library:
        recall = bench_recall(bench_library, bench_library.encoder(spec), load_captions(captions_file))
    return DemoReport(root, root / "library", images, indexing, text_queries, image_query, recall)
