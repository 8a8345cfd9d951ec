"""Tests of quality.sketch, the second renderer: another drawing style of the same scenes, test splits only."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.quality.scenes import COLOURS, POSITIONS, SHAPES, V2, Scene, render
from retrieval.quality.sketch import CANVAS_SCALES, render_sketch

SIZE = 96


def _near(image_pixels: np.ndarray, colour: str, tolerance: int) -> np.ndarray:
    return np.abs(image_pixels.astype(np.int32) - np.array(COLOURS[colour])).max(axis=-1) <= tolerance


@pytest.mark.parametrize("position", ["left", "right", "top", "bottom"])
def test_objects_of_the_scene_colour_lie_on_the_stated_side(position: str) -> None:
    """Red shapes on a blue gradient: the red pixels lie in the half the position names, whatever the
    canvas size the renderer picked."""
    for shape in SHAPES:
        scene = Scene(shape, "red", "large", 2, position, "blue", "striped")
        pixels = np.asarray(render_sketch(scene, random.Random(shape), SIZE))
        height, width, _ = pixels.shape
        assert height == width and width in {int(SIZE * scale) for scale in CANVAS_SCALES}
        ys, xs = np.nonzero(_near(pixels, "red", 50))
        assert len(xs) >= 40, scene
        side = {"left": xs < width / 2, "right": xs >= width / 2, "top": ys < height / 2, "bottom": ys >= height / 2}
        assert side[position].mean() >= 0.97, scene


def test_drawing_differs_from_the_first_renderer() -> None:
    """Same scene: the background is not one flat colour (gradient and noise), unlike the first renderer's,
    and the canvas sizes vary over pictures."""
    scene = Scene("circle", "yellow", "small", 1, "center", "green", "plain")
    first = np.asarray(render(scene, random.Random(1), SIZE, V2))
    corners_first = {tuple(first[y, x]) for y, x in ((2, 2), (2, SIZE - 3), (SIZE - 3, 2), (SIZE - 3, SIZE - 3))}
    assert len(corners_first) == 1
    sketch = np.asarray(render_sketch(scene, random.Random(1), SIZE)).astype(np.int32)
    side = sketch.shape[0]
    corners = [sketch[y, x] for y, x in ((2, 2), (2, side - 3), (side - 3, 2), (side - 3, side - 3))]
    assert max(np.abs(a - b).max() for a in corners for b in corners) >= 15
    sizes = {render_sketch(scene, random.Random(seed), SIZE).size for seed in range(12)}
    assert len(sizes) >= 2


def test_sketch_is_a_pure_function_of_the_rng() -> None:
    scene = Scene("star", "white", "large", 3, "bottom", "black", "dotted")
    first = np.asarray(render_sketch(scene, random.Random("a"), SIZE))
    assert np.array_equal(first, np.asarray(render_sketch(scene, random.Random("a"), SIZE)))
    other = np.asarray(render_sketch(scene, random.Random("b"), SIZE))
    assert first.shape != other.shape or not np.array_equal(first, other)


@pytest.mark.parametrize("position", POSITIONS)
def test_every_count_is_drawn_apart(position: str) -> None:
    """Three large circles never merge into one blob: the object-coloured area is about three circles'."""
    one = Scene("circle", "white", "large", 1, position, "black", "plain")
    three = Scene("circle", "white", "large", 3, position, "black", "plain")
    area = {
        scene.count: _near(
            np.asarray(render_sketch(scene, random.Random(0), SIZE).resize((SIZE, SIZE))), "white", 40
        ).sum()
        for scene in (one, three)
    }
    assert 2.4 * area[1] <= area[3] <= 3.6 * area[1], area
