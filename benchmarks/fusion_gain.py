"""Fusion gain: does a composed query find the composed attributes better than each of its parts alone?

Generates N unseen scenes (`generate_dataset`, a seed the reference model never trained on), indexes them
with the packaged reference model through the indexer, and runs each composition below through
`Searcher.search(Query)` beside its parts alone (and, for two texts, the one caption a user would type).
A hit is an image whose scene has every attribute the composition targets; the table gives precision@k,
averaged over the composition's query images (the first QUERY_IMAGES scenes in dataset order that show what
the image part names; each is left out of its own results) or the one text query.

The compositions, their texts and the weights rule (the library's one fusion rule, weights 1 and -1) were
written down before any result was seen; nothing is tuned per query.

    python benchmarks/fusion_gain.py --images 1500 --workdir /tmp/fusion
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.bench_attributes import load_scenes
from indexer.pipeline import index_folders
from retrieval import Library, Part, Query, Searcher, reference_spec
from retrieval.quality.scene_dataset import generate_dataset

SEED = 4242  # not a seed the reference model was trained or validated on (1001-1014, 0)
QUERY_IMAGES = 10
KS = (1, 10, 50)

Scene = Mapping[str, Any]
Wants = Callable[[Scene], bool]


def has(**wanted: Any) -> Wants:
    return lambda scene: all(scene[name] == value for name, value in wanted.items())


@dataclass(frozen=True)
class Composition:
    name: str
    target: Wants  # what a hit must show
    texts: tuple[tuple[str, float], ...]  # (text, weight)
    image: Wants | None = None  # which scenes serve as the image part (weight 1)
    joined: str | None = None  # the single caption a user would type instead, as a further baseline


COMPOSITIONS = [
    Composition(
        "image of a red circle + 'blue'",
        has(shape="circle", colour="blue"),
        (("blue", 1.0),),
        image=has(shape="circle", colour="red"),
    ),
    Composition(
        "image of a red circle + 'something blue'",
        has(shape="circle", colour="blue"),
        (("something blue", 1.0),),
        image=has(shape="circle", colour="red"),
    ),
    Composition(
        "'circles' --not 'red'",
        lambda scene: scene["shape"] == "circle" and scene["colour"] != "red",
        (("circles", 1.0), ("red", -1.0)),
    ),
    Composition(
        "'circles' --not 'red shapes'",
        lambda scene: scene["shape"] == "circle" and scene["colour"] != "red",
        (("circles", 1.0), ("red shapes", -1.0)),
    ),
    Composition(
        "image of a blue square + 'a star'",
        has(shape="star", colour="blue"),
        (("a star", 1.0),),
        image=has(shape="square", colour="blue"),
    ),
    Composition(
        "image on a striped background + 'circles'",
        has(shape="circle", texture="striped"),
        (("circles", 1.0),),
        image=has(texture="striped"),
    ),
    Composition(
        "'stars' + 'on a yellow background'",
        has(shape="star", background="yellow"),
        (("stars", 1.0), ("on a yellow background", 1.0)),
        joined="stars on a yellow background",
    ),
    Composition(
        "'a triangle' --not 'something green'",
        lambda scene: scene["shape"] == "triangle" and scene["colour"] != "green",
        (("a triangle", 1.0), ("something green", -1.0)),
    ),
]


def precision(searcher: Searcher, parts: tuple[Part, ...], target: Wants, scenes: dict[str, Scene]) -> list[float]:
    """Precision@k for each of KS: the share of the top k whose scene shows the target."""
    results = searcher.search(Query(parts, k=max(KS)))
    hits = [target(scenes[str(Path(result.path).resolve())]) for result in results]
    return [100.0 * sum(hits[:k]) / k for k in KS]


def rows_of(composition: Composition, searcher: Searcher, scenes: dict[str, Scene]) -> list[tuple[str, list[float]]]:
    """(label, mean precision@k) of the composition and of each baseline, over its query images."""
    texts = tuple(Part(text=text, weight=weight) for text, weight in composition.texts)
    images = [path for path, scene in scenes.items() if composition.image and composition.image(scene)]
    image_sets = [(Part(image=path),) for path in images[:QUERY_IMAGES]] if composition.image else [()]
    variants: list[tuple[str, bool, tuple[Part, ...]]] = [("composed", True, texts)]  # label, with image, texts
    if composition.image:
        variants.append(("image alone", True, ()))
    variants += [(f"'{part.text}' alone", False, (part,)) for part in texts if part.weight > 0]
    if composition.joined:
        variants.append((f"'{composition.joined}' (one text)", False, (Part(text=composition.joined),)))
    rows = []
    for label, with_image, extra in variants:
        runs = [
            precision(searcher, (image if with_image else ()) + extra, composition.target, scenes)
            for image in image_sets
        ]
        rows.append((label, np.mean(runs, axis=0).tolist()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500, help="generated scenes to index")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the scenes and library here (reused)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clipsearch-fusion-"))
    started = time.perf_counter()
    dataset = generate_dataset(workdir / "scenes", seed=SEED, sizes={"test": args.images})
    data, scene_list = load_scenes(dataset.split_file("test"))
    scenes: dict[str, Scene] = {
        str(Path(image).resolve()): scene for image, scene in zip(data.images, scene_list, strict=True)
    }
    with Library(workdir / "library", create=True) as library:
        encoder = library.encoder(reference_spec(), device="cpu")
        index_folders(library, encoder, [str(workdir / "scenes" / "images" / "test")], workers=2)
        searcher = Searcher(library, encoder, gpu="never")
        print(f"{len(scenes)} scenes (seed {SEED}), reference model, set up in {time.perf_counter() - started:.0f} s")
        print(f"precision@k (%), mean over up to {QUERY_IMAGES} query images where the query has an image part\n")
        header = f"{'composition / query':<58}" + "".join(f"{'P@' + str(k):>8}" for k in KS) + f"{'relevant':>10}"
        print(header)
        print("-" * len(header))
        for composition in COMPOSITIONS:
            relevant = sum(composition.target(scene) for scene in scenes.values())
            for number, (label, values) in enumerate(rows_of(composition, searcher, scenes)):
                name = composition.name if number == 0 else f"    {label}"
                tail = f"{relevant:>10}" if number == 0 else ""
                print(f"{name:<58}" + "".join(f"{value:>8.1f}" for value in values) + tail)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; workdir {workdir}")


if __name__ == "__main__":
    main()
