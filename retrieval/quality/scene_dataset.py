"""Write a generated captioned dataset to disk in the format users bring their own data in.

Layout of a dataset folder:
    manifest.json                  what was generated, with which seed, and a digest per split
    <split>.jsonl                  {"image": "images/<split>/000001.jpg", "captions": [...], "scene": {...}}
    images/<split>/000001.jpg
Each split loads with `retrieval.quality.captions.load_captions(folder / "<split>.jsonl")`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.atomic import write_atomic
from retrieval.config import DEFAULT_CAPTIONS_PER_IMAGE, DEFAULT_IMAGE_SIZE, DEFAULT_SPLIT_SIZES, DEFAULT_STYLE
from retrieval.config import STYLE_CHOICES as STYLE_CHOICES  # the styles, one per generator: see GENERATORS
from retrieval.errors import DatasetError
from retrieval.progress import ProgressCallback
from retrieval.quality.scenes import (
    COLOURS,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    TEXTURES,
    Scene,
    captions_of,
    render,
    sample_scene,
    short_caption_of,
)

MANIFEST = "manifest.json"
GENERATORS = {"v1": "clipsearch.scenes v2", "v2": "clipsearch.scenes v3", "sketch": "clipsearch.scenes sketch v1"}
"""Generator name per `style`, as the manifest records it. "v1" draws what the first reference model trained
on (small objects; its name is the one its manifest in data/ records); "v2" draws objects large enough to
count, and gives training splits short query-like captions too; "sketch" is the second renderer
(`retrieval.quality.sketch`), for evaluation splits only."""
SHORT_CAPTIONS_PER_IMAGE = 3
"""Style v2: short captions added per training image, beside the full ones."""
EVALUATION_SPLITS = frozenset({"test", "heldout-test"})
JPEG_QUALITY = 90

HELD_OUT_POLICY: dict[str, bool | None] = {
    "train": False,
    "val": False,
    "test": None,
    "heldout-train": True,
    "heldout-test": True,
}
"""Per split: False = no held-out (shape, colour) pair, True = only held-out pairs, None = any pair."""

PARTIAL_CAPTION_SPLITS = frozenset({"train", "heldout-train"})
"""Splits whose last caption per image names only some attributes (training for short queries); evaluation
splits keep full captions, so that a caption describes one scene and recall@k stays well defined."""


@dataclass(frozen=True)
class GeneratedDataset:
    folder: Path
    manifest: dict[str, Any]

    def split_file(self, split: str) -> Path:
        return self.folder / self.manifest["splits"][split]["file"]


def generate_dataset(
    folder: str | Path,
    *,
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    captions_per_image: int = DEFAULT_CAPTIONS_PER_IMAGE,
    workers: int = 2,
    progress: ProgressCallback | None = None,
    style: str = DEFAULT_STYLE,
) -> GeneratedDataset:
    """Generate (or find already generated) the splits into `folder`; deterministic in its arguments.

    `style` picks the generator (`GENERATORS`); "v1" reproduces the first reference model's data exactly.

    A folder that already holds a dataset made with the same arguments is returned as is; any other
    non-empty folder is refused, so nothing of the user's is overwritten.
    """
    root = Path(folder).expanduser()
    wanted = dict(DEFAULT_SPLIT_SIZES if sizes is None else sizes)
    unknown = sorted(set(wanted) - set(HELD_OUT_POLICY))
    if unknown:
        raise DatasetError(f"unknown split(s) {', '.join(unknown)}; the splits are {', '.join(HELD_OUT_POLICY)}")
    if any(count < 0 for count in wanted.values()) or image_size < 16 or captions_per_image < 1:
        raise DatasetError("split sizes must be >= 0, image size >= 16 and captions per image >= 1")
    if not any(wanted.values()):
        raise DatasetError("nothing to generate: every split size is 0; give at least one split a size above 0")
    if style not in GENERATORS:
        raise DatasetError(f"unknown `style` {style!r}; the styles are {', '.join(GENERATORS)}")
    training = sorted(split for split, count in wanted.items() if count > 0 and split not in EVALUATION_SPLITS)
    if style == "sketch" and training:
        raise DatasetError(
            f"the sketch style is for evaluation only (test, heldout-test), not {', '.join(training)}: "
            "a model must never train on the second renderer's pictures"
        )
    params: dict[str, Any] = {
        "seed": seed,
        "image_size": image_size,
        "captions_per_image": captions_per_image,
        "sizes": {split: count for split, count in wanted.items() if count > 0},
    }
    generator = GENERATORS[style]
    existing = _existing(root, params, generator)
    if existing is not None:
        return existing
    splits = {
        split: _write_split(root, split, count, params, style, workers, progress)
        for split, count in params["sizes"].items()
    }
    manifest = _manifest(generator, params, splits)
    write_atomic(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return GeneratedDataset(root, manifest)


def _existing(root: Path, params: dict[str, Any], generator: str) -> GeneratedDataset | None:
    if not root.exists():
        return None
    if not root.is_dir():
        raise DatasetError(f"{root} exists and is not a folder")
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise DatasetError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if manifest.get("generator") == generator and manifest.get("parameters") == params:
            return GeneratedDataset(root, manifest)
        what = (
            f"other parameters ({manifest.get('parameters')})"
            if manifest.get("generator") == generator
            else f"another generator ({manifest.get('generator')}, now {generator})"
        )
        raise DatasetError(f"{root} holds a dataset generated with {what}; choose another folder or delete it")
    if any(root.iterdir()):
        raise DatasetError(f"{root} is not empty and holds no generated dataset; choose an empty or new folder")
    return None


def _write_split(
    root: Path,
    split: str,
    count: int,
    params: dict[str, Any],
    style: str,
    workers: int,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)

    def make(index: int) -> dict[str, Any]:
        rng = random.Random(f"clipsearch-scenes/{params['seed']}/{split}/{index}")
        scene = sample_scene(rng, held_out=HELD_OUT_POLICY[split])
        captions = _captions(scene, rng, params["captions_per_image"], style, training=split in PARTIAL_CAPTION_SPLITS)
        relative = f"images/{split}/{index:06d}.jpg"
        if style == "sketch":
            from retrieval.quality.sketch import render_sketch  # numpy: only where the sketch style is drawn

            image = render_sketch(scene, rng, params["image_size"])
        else:
            image = render(scene, rng, params["image_size"], STYLES[style])
        image.save(root / relative, quality=JPEG_QUALITY)
        return {"image": relative, "captions": captions, "scene": scene.to_json()}

    lines: list[str] = []
    captions = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, record in enumerate(pool.map(make, range(count)), start=1):
            lines.append(json.dumps(record))
            captions += len(record["captions"])
            if progress is not None:
                progress(done, count)
    text = "\n".join(lines) + "\n"
    captions_file = root / f"{split}.jsonl"
    write_atomic(captions_file, text)
    return {
        "file": captions_file.name,
        "images": count,
        "captions": captions,
        "held_out_pairs": {False: "excluded", True: "only", None: "mixed"}[HELD_OUT_POLICY[split]],
        "captions_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def _captions(scene: Scene, rng: random.Random, count: int, style: str, *, training: bool) -> list[str]:
    """Style v1: `count` captions, the last of a training split's partial. Other styles: `count` full
    captions, and on training splits SHORT_CAPTIONS_PER_IMAGE short ones after them."""
    if style == "v1":
        return captions_of(scene, rng, count, partial=training)
    captions = captions_of(scene, rng, count)
    wanted = len(captions) + (SHORT_CAPTIONS_PER_IMAGE if training else 0)
    for _ in range(SHORT_CAPTIONS_PER_IMAGE * 20):
        if len(captions) == wanted:
            break
        short = short_caption_of(scene, rng)
        if short not in captions:
            captions.append(short)
    return captions


def _manifest(generator: str, params: dict[str, Any], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "generator": generator,
        "parameters": params,
        "splits": splits,
        "held_out_pairs": [list(pair) for pair in HELD_OUT_PAIRS],
        "vocabulary": {
            "shapes": list(SHAPES),
            "colours": list(COLOURS),
            "sizes": list(SIZES),
            "counts": [1, 2, 3],
            "positions": list(POSITIONS),
            "textures": list(TEXTURES),
        },
        "note": "captions_sha256 is exact on every machine; pixels may differ in the last bit across "
        "Pillow/libjpeg versions.",
    }
