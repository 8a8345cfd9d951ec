"""Semantics end to end with the project's reference model (retrieval/model/data/reference.*), on scenes it never saw.

The scenes come from a seed no training split uses, are indexed by the indexer and searched by the
Searcher, and what each hit really shows is read from the generator's own record of the scene.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from indexer.bench_recall import bench_recall
from indexer.cli import cli
from indexer.demo import DEMO_TEXT_QUERIES, reference_spec
from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.search import Searcher

ATTRIBUTES = ("shape", "colour", "size", "count", "position", "background", "texture")
CHANCE = {"shape": 1 / 5, "colour": 1 / 8, "size": 1 / 2, "count": 1 / 3, "position": 1 / 5, "background": 1 / 7}


@dataclass
class Indexed:
    searcher: Searcher
    library: Library
    scenes: dict[str, dict[str, Any]]  # resolved image path -> scene attributes
    captions_file: Path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Indexed]:
    folder = tmp_path_factory.mktemp("reference")
    dataset = generate_dataset(folder / "scenes", seed=4242, sizes={"test": 240})
    captions_file = dataset.split_file("test")
    scenes = {
        str((folder / "scenes" / record["image"]).resolve()): record["scene"]
        for record in map(json.loads, captions_file.read_text().splitlines())
    }
    with Library(folder / "library", create=True) as library:
        encoder = library.encoder(reference_spec())
        index_folders(library, encoder, [str(folder / "scenes" / "images")])
        yield Indexed(Searcher(library, encoder), library, scenes, captions_file)


def _shown(indexed: Indexed, query: str, k: int) -> list[dict[str, Any]]:
    return [indexed.scenes[str(Path(r.path).resolve())] for r in indexed.searcher.search_text(query, k)]


@pytest.mark.parametrize(
    ("query", "attribute", "value"),
    [
        ("red circles", "colour", "red"),
        ("blue squares", "colour", "blue"),
        ("yellow stars", "colour", "yellow"),
        ("white crosses", "colour", "white"),
        ("green triangles", "colour", "green"),
        ("a striped black background", "background", "black"),
        ("a striped black background", "texture", "striped"),
        ("a dotted orange background", "texture", "dotted"),
        ("a checkered white background", "texture", "checkered"),
    ],
)
def test_text_query_puts_images_with_the_attribute_on_top(
    indexed: Indexed, query: str, attribute: str, value: object
) -> None:
    """At least 4 of the top 5 images for a query show the attribute it names (chance: 1 in 3 to 1 in 8)."""
    shown = [scene[attribute] for scene in _shown(indexed, query, 5)]
    assert sum(found == value for found in shown) >= 4, f"{query!r}: top 5 {attribute}s are {shown}"


def test_short_queries_find_the_shape_named_well_above_chance(indexed: Indexed) -> None:
    """Shape is the reference model's weakest attribute (objects are 8-14 px at its 64 px input), so this pins
    a floor, not perfection: over five colour+shape queries, the top 5 show the shape named at least 9 times
    out of 25 (chance: 5). Measured when the model was committed: 11 of 25."""
    queries = {"red circles": "circle", "blue squares": "square", "yellow stars": "star", "white crosses": "cross"}
    queries["green triangles"] = "triangle"
    hits = sum(scene["shape"] == shape for query, shape in queries.items() for scene in _shown(indexed, query, 5))
    assert hits >= 9, f"only {hits}/25 of the top 5 images show the shape the query names"


def test_full_description_finds_its_scene_first(indexed: Indexed) -> None:
    """A caption naming every attribute of a scene ranks an image matching all of them first, most of the time."""
    records = [json.loads(line) for line in indexed.captions_file.read_text().splitlines()][:40]
    exact = 0
    for record in records:
        top = _shown(indexed, record["captions"][0], 1)[0]
        exact += all(top[name] == record["scene"][name] for name in ("shape", "colour", "background", "texture"))
    assert exact >= 30, f"only {exact}/40 full captions found a scene with the same shape, colour and background"


def test_similar_images_share_attributes_far_above_chance(indexed: Indexed) -> None:
    """The 3 nearest images of a scene share its colour and background far more often than chance (measured:
    0.67 and 0.73 against 0.125 and 0.14). Shape is not asserted: image-to-image similarity of this small
    model is dominated by colours (shape agreement was at chance, 0.20), which the closing note reports."""
    shared = dict.fromkeys(CHANCE, 0.0)
    queries = sorted(indexed.scenes)[:30]
    for path in queries:
        for result in indexed.searcher.search_image(path, 3):
            found = indexed.scenes[str(Path(result.path).resolve())]
            for name in shared:
                shared[name] += found[name] == indexed.scenes[path][name]
    rates = {name: count / (3 * len(queries)) for name, count in shared.items()}
    for name in ("colour", "background"):
        assert rates[name] >= 3 * CHANCE[name], f"similar images share {name} at rate {rates[name]:.2f}: {rates}"


def test_recall_on_unseen_scenes_is_far_above_chance(indexed: Indexed, tmp_path: Path) -> None:
    """Through the engine (indexer + FAISS), R@10 both ways is far above the 4% that chance gives."""
    with Library(tmp_path / "bench", create=True) as library:
        report = bench_recall(library, library.encoder(reference_spec()), load_captions(indexed.captions_file))
    assert report.images == 240 and report.captions == 720
    assert report.index_matches_exact
    assert report.index.text_to_image[10] >= 60.0, report.to_json()
    assert report.index.image_to_text[10] >= 60.0, report.to_json()
    assert "checkpoint sha256:" in report.model


def test_demo_runs_end_to_end_offline_and_reuses_its_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["demo", "--folder", str(tmp_path / "demo"), "--images", "60"])
    assert first.exit_code == 0, first.output
    for query in DEMO_TEXT_QUERIES:
        assert f'search "{query}"' in first.output
    assert "similar to" in first.output and "shows:" in first.output
    assert "R@1" in first.output and "text->image" in first.output
    assert "60 embedded" in first.output
    assert 'clipsearch search "a dog on the beach at sunset"' in first.output  # the way to real photos
    again = runner.invoke(cli, ["demo", "--folder", str(tmp_path / "demo"), "--images", "60"])
    assert again.exit_code == 0, again.output
    assert "0 embedded, 60 unchanged" in again.output
