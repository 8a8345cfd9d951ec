"""`clipsearch demo`: the main job end to end, offline, with the project's reference model.

Generates a set of captioned scenes, indexes it into a demo library with the reference model, runs text
and image queries, and measures the engine on the set: the attribute table (`bench attributes`) and
recall@k (`bench recall`). The demo checks itself: the showcase queries are fixed here with the
attributes each asks for, and every hit is checked against the generator's record of its scene.
Everything lands in one folder, and running it again reuses what is there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.bench_attributes import AttributeBenchReport, bench_attributes
from indexer.bench_recall import RecallBenchReport, bench_recall
from indexer.pipeline import IndexReport, ProgressCallback, index_folders
from retrieval.config import DEFAULT_DEMO_FOLDER, DEFAULT_DEMO_IMAGES, DEFAULT_DEMO_K
from retrieval.library import Library
from retrieval.model.reference import reference_spec
from retrieval.quality.attributes import AttributeQuery
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.search import Searcher, SearchResult

DEMO_SPLIT = "test"
DEMO_SEED = 2026
DEMO_QUERIES = (
    AttributeQuery("showcase", "three red circles", {"count": 3, "colour": "red", "shape": "circle"}),
    AttributeQuery("showcase", "a large yellow star", {"size": "large", "colour": "yellow", "shape": "star"}),
    AttributeQuery("showcase", "stars on a striped background", {"shape": "star", "texture": "striped"}),
    AttributeQuery("showcase", "squares at the top", {"shape": "square", "position": "top"}),
    AttributeQuery("showcase", "two green crosses", {"count": 2, "colour": "green", "shape": "cross"}),
    AttributeQuery("showcase", "a blue triangle", {"colour": "blue", "shape": "triangle"}),
)
"""The showcase: fixed in code with what each query asks for, each naming two to three attributes, so that
the demo set (seed DEMO_SEED) holds at least 3 pictures that have them all (a test checks it)."""
DEMO_TEXT_QUERIES = tuple(query.text for query in DEMO_QUERIES)
SIMILAR_CHECKS = ("shape", "colour", "count")
"""What the similar-image query's hits are checked for: the query picture's own objects."""


@dataclass(frozen=True)
class Hit:
    result: SearchResult
    caption: str  # the generator's first caption of the image found: what it really shows
    scene: dict[str, Any]  # the generator's record of what it shows
    checks: dict[str, bool]  # attribute the query asks for -> whether the picture has it

    @property
    def right(self) -> bool:
        return all(self.checks.values())


@dataclass(frozen=True)
class QueryResult:
    query: AttributeQuery
    hits: list[Hit]
    relevant: int  # pictures in the set that have every attribute asked for

    @property
    def precision(self) -> float:
        """Right hits over the most that could be right (k, or fewer where the set holds fewer)."""
        possible = min(len(self.hits), self.relevant)
        return sum(hit.right for hit in self.hits) / possible if possible else 0.0


@dataclass
class DemoReport:
    folder: Path
    library: Path
    images: int
    indexing: IndexReport
    text_queries: list[QueryResult]
    image_query: tuple[str, str, list[Hit]]
    attributes: AttributeBenchReport
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
    records = {
        str((root / "scenes" / record["image"]).resolve()): record
        for record in map(json.loads, captions_file.read_text().splitlines())
    }
    with Library(root / "library", create=True) as library:
        encoder = library.encoder(spec)
        indexing = index_folders(library, encoder, [str(root / "scenes" / "images")], progress=progress)
        searcher = Searcher(library, encoder)

        def hits(results: list[SearchResult], wants: dict[str, Any]) -> list[Hit]:
            found = [
                records.get(str(Path(result.path).resolve()), {"captions": ["?"], "scene": {}}) for result in results
            ]
            return [
                Hit(
                    result,
                    record["captions"][0],
                    record["scene"],
                    {name: record["scene"].get(name) == value for name, value in wants.items()},
                )
                for result, record in zip(results, found, strict=True)
            ]

        text_queries = [
            QueryResult(
                query,
                hits(searcher.search_text(query.text, k, min_relevance=None), dict(query.wants)),
                sum(query.matches(record["scene"]) for record in records.values()),
            )
            for query in DEMO_QUERIES
        ]
        example = sorted(records)[0]
        shown = records[example]["scene"]
        same = {name: shown[name] for name in SIMILAR_CHECKS}
        image_query = (example, records[example]["captions"][0], hits(searcher.search_image(example, k), same))
    with Library(root / "bench-library", create=True) as bench_library:
        encoder = bench_library.encoder(spec)
        attributes = bench_attributes(bench_library, encoder, captions_file)
        recall = bench_recall(bench_library, encoder, load_captions(captions_file))
    return DemoReport(root, root / "library", images, indexing, text_queries, image_query, attributes, recall)
