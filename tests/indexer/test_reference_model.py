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

from indexer.bench_attributes import bench_attributes
from indexer.bench_recall import bench_recall
from indexer.cli import cli
from indexer.demo import DEMO_QUERIES, DEMO_SEED, DEMO_SPLIT, DEMO_TEXT_QUERIES, reference_spec
from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.quality.captions import load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.search import Searcher
from tests.libcheck import assert_top_shows_the_query

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
    return [
        indexed.scenes[str(Path(r.path).resolve())] for r in indexed.searcher.search_text(query, k, min_relevance=None)
    ]


@pytest.mark.parametrize(
    "query",
    [
        "red circles",
        "blue squares",
        "yellow stars",
        "white crosses",
        "green triangles",
        "a striped black background",
        "a dotted orange background",
        "a checkered white background",
        "three circles",
        "stars",
        "crosses on the left",
        "large stars",
    ],
)
def test_text_query_puts_images_with_the_attributes_on_top(indexed: Indexed, query: str) -> None:
    """At least 4 of the top 5 images for a query show everything it names, read as the attribute benchmark
    reads it (`constraints_of`, loose: a plural is two or three), or all of them where the set holds fewer
    than 4 (it holds 3 yellow stars among 240 scenes)."""
    assert_top_shows_the_query(query, _shown(indexed, query, 5), indexed.scenes.values())


def test_attribute_precision_on_unseen_scenes(indexed: Indexed, tmp_path: Path) -> None:
    """The attribute benchmark through the engine on these 240 unseen scenes. Floors a little under what v3
    measured here (P@3: shape, colour, size, background, texture 100, count 97.8, position 98.7; colour+shape
    P@1 80.0, with only about 6 pictures per pair in 240); v5 measures P@3 100 for every attribute but
    colour+shape (97.5), and colour+shape P@1 100; v2 measured count
    91.1, size 93.3, position 66.7 and colour+shape P@1 72.5 here, the v1 model shape 50, count 31, position
    13 on its own test split."""
    with Library(tmp_path / "bench", create=True) as library:
        report = bench_attributes(library, library.encoder(reference_spec()), indexed.captions_file)
    table = report.precision.table
    floors = {"shape": 90, "colour": 90, "count": 90, "size": 90, "position": 90, "background": 90, "texture": 90}
    for attribute, floor in floors.items():
        assert table[attribute]["P@3"] >= floor, (attribute, table)
    assert table["colour+shape"]["P@1"] >= 70, table


def test_full_description_finds_its_scene_first(indexed: Indexed) -> None:
    """A caption naming every attribute of a scene ranks an image matching shape, colour, count, background and
    texture first, nearly always (measured: 40 of 40)."""
    records = [json.loads(line) for line in indexed.captions_file.read_text().splitlines()][:40]
    exact = 0
    names = ("shape", "colour", "count", "background", "texture")
    for record in records:
        top = _shown(indexed, record["captions"][0], 1)[0]
        exact += all(top[name] == record["scene"][name] for name in names)
    assert exact >= 34, f"only {exact}/40 full captions found a scene with the same {', '.join(names)}"


def test_similar_images_share_attributes_far_above_chance(indexed: Indexed) -> None:
    """The 3 nearest images of a scene share its colour and background far more often than chance (measured
    with v5: 0.43 and 0.57 against 0.125 and 0.14), and its shape and count too (v5: 0.70 and 0.67 against 0.2
    and 0.33; the v1 model's shape agreement was at chance). v4's graded targets, which teach that three blue
    triangles are partly "a blue triangle", had brought count agreement down to 0.54 from v3's 0.68; v5's
    longer training brought it back."""
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
    assert rates["shape"] >= 1.8 * CHANCE["shape"], f"similar images share shape at rate {rates['shape']:.2f}: {rates}"
    assert rates["count"] >= 1.8 * CHANCE["count"], f"similar images share count at rate {rates['count']:.2f}: {rates}"


def test_recall_on_unseen_scenes_is_far_above_chance(indexed: Indexed, tmp_path: Path) -> None:
    """Through the engine (indexer + FAISS), R@10 both ways is far above the 4% that chance gives, and R@1
    text->image is high."""
    with Library(tmp_path / "bench", create=True) as library:
        report = bench_recall(library, library.encoder(reference_spec()), load_captions(indexed.captions_file))
    assert report.images == 240 and report.captions == 720
    assert report.index_matches_exact
    assert report.index.text_to_image[10] >= 60.0, report.to_json()
    assert report.index.image_to_text[10] >= 60.0, report.to_json()
    assert report.index.text_to_image[1] >= 85.0, report.to_json()  # measured 99.2 on these 240
    assert "checkpoint sha256:" in report.model


def test_demo_runs_end_to_end_offline_and_reuses_its_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["demo", "--folder", str(tmp_path / "demo"), "--images", "60"])
    assert first.exit_code == 0, first.output
    for query in DEMO_TEXT_QUERIES:
        assert f'search "{query}"' in first.output
    assert "precision:" in first.output and "✓" in first.output
    assert "| colour+shape |" in first.output and "showcase precision@3" in first.output
    assert "similar to" in first.output and "shows:" in first.output
    assert "R@1" in first.output and "text->image" in first.output
    assert "60 embedded" in first.output
    assert 'clipsearch search "a dog on the beach at sunset"' in first.output  # the way to real photos
    again = runner.invoke(cli, ["demo", "--folder", str(tmp_path / "demo"), "--images", "60"])
    assert again.exit_code == 0, again.output
    assert "0 embedded, 60 unchanged" in again.output


def test_demo_set_holds_three_pictures_for_every_showcase_query() -> None:
    """With the default 300 images, every showcase query can have 3 right hits: the scenes (seed DEMO_SEED,
    the same in every style) hold at least 3 pictures with all the attributes it asks for. No model needed."""
    import random

    from retrieval.config import DEFAULT_DEMO_IMAGES
    from retrieval.quality.scenes import sample_scene

    scenes = [
        sample_scene(random.Random(f"clipsearch-scenes/{DEMO_SEED}/{DEMO_SPLIT}/{index}"), held_out=None).to_json()
        for index in range(DEFAULT_DEMO_IMAGES)
    ]
    for query in DEMO_QUERIES:
        assert sum(query.matches(scene) for scene in scenes) >= 3, query.text


@pytest.mark.slow
def test_demo_showcase_queries_are_right_in_their_top_3(tmp_path: Path) -> None:
    """The demo's promise, with the packaged model on the demo's own scenes (DEFAULT_DEMO_IMAGES of seed
    DEMO_SEED, k = DEFAULT_DEMO_K): every hit of every showcase query has every attribute the query asks for
    (reference model v5: 18 of 18; v4 got 13, v3 12, v2 11)."""
    from indexer.demo import run_demo

    report = run_demo(tmp_path / "demo")
    wrong = {
        result.query.text: [hit.caption for hit in result.hits if not hit.right]
        for result in report.text_queries
        if not all(hit.right for hit in result.hits)
    }
    assert not wrong, wrong
