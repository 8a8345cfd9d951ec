"""Tests of training.augment: photo-like distortions that keep what a picture shows."""

from __future__ import annotations

import random

import numpy as np
import torch

from retrieval.quality.scenes import COLOURS, V2, Scene, render
from retrieval.training.augment import augment, augmenting


def _picture() -> tuple[Scene, np.ndarray]:
    scene = Scene("triangle", "red", "large", 1, "left", "blue", "plain")
    return scene, np.asarray(render(scene, random.Random(0), 96, V2))


def test_augment_is_random_but_a_function_of_torch_seed() -> None:
    _, pixels = _picture()
    from PIL import Image

    image = Image.fromarray(pixels)
    torch.manual_seed(5)
    first = np.asarray(augment(image))
    torch.manual_seed(5)
    assert np.array_equal(first, np.asarray(augment(image)))
    outputs = {np.asarray(augment(image)).tobytes() for _ in range(6)}
    assert len(outputs) >= 5  # distortions differ from draw to draw
    assert first.shape == pixels.shape


def test_augmented_pictures_keep_object_colour_and_side() -> None:
    """Over many draws: the red object stays red (no hue turn into orange or purple) and on the left."""
    from PIL import Image

    _, pixels = _picture()
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    red = np.array(COLOURS["red"])
    for _ in range(30):
        out = np.asarray(augment(image)).astype(np.int32)
        near = np.abs(out - red).max(axis=-1) <= 70
        xs = np.nonzero(near)[1]
        assert len(xs) > 100
        assert (xs < 48).mean() >= 0.97
        nearest = min(COLOURS, key=lambda name: np.abs(out[near].mean(axis=0) - np.array(COLOURS[name])).sum())
        assert nearest == "red"


def test_augmenting_ends_in_the_model_transform() -> None:
    from PIL import Image

    _, pixels = _picture()
    transform = augmenting(lambda image: torch.tensor(np.asarray(image)).permute(2, 0, 1))
    out = transform(Image.fromarray(pixels))
    assert out.shape == (3, 96, 96)
