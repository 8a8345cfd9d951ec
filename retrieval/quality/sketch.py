"""A second renderer of scenes, in another drawing style, for test splits only (`style="sketch"`).

Training never sees its pictures (the dataset generator refuses it for training splits), so a model's
precision on them says whether it learned shapes, colours and counts or the first renderer's pixels. It
differs in everything but what a scene means: anti-aliased shapes with dark outlines, gradient and noisy
backgrounds, diagonal stripes and offset dots, other shape proportions, other canvas sizes.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from retrieval.quality.scenes import COLOURS, V2, Scene

SUPERSAMPLE = 4
CANVAS_SCALES = (0.75, 1.0, 1.5)
"""The canvas side is the requested size times one of these, per picture."""


def render_sketch(scene: Scene, rng: random.Random, size: int) -> Image.Image:
    """Draw `scene` in the second style on a square canvas of about `size` px (see CANVAS_SCALES)."""
    side = int(size * rng.choice(CANVAS_SCALES))
    big = side * SUPERSAMPLE
    image = Image.fromarray(_background(scene, rng, big))
    draw = ImageDraw.Draw(image)
    _texture(draw, scene, big, rng)
    diameter = V2.diameter[scene.size] * big * rng.uniform(0.93, 1.07)
    fill = COLOURS[scene.colour]
    red, green, blue = (int(channel * 0.45) for channel in fill)
    outline = (red, green, blue)
    for centre in V2.place(scene, big, diameter, rng):
        _shape(draw, scene.shape, centre, diameter / 2, fill, outline, rng, width=max(1, big // 60))
    return image.resize((side, side), Image.Resampling.LANCZOS)


def _background(scene: Scene, rng: random.Random, side: int) -> np.ndarray:
    """A linear gradient across the background colour (lighter to darker) at a random angle, plus noise."""
    base = np.asarray(COLOURS[scene.background], dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))[..., None]  # -0.7 .. 0.7
    pixels = base + ramp * 50.0
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 7.0, size=(side, side, 1))
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def _pattern(background: str) -> tuple[int, int, int]:
    r, g, b = COLOURS[background]
    lift = 0.3 if (r + g + b) / 3 <= 128 else -0.2
    return tuple(int(channel + ((255 - channel) if lift > 0 else channel) * lift) for channel in (r, g, b))  # type: ignore[return-value]


def _texture(draw: ImageDraw.ImageDraw, scene: Scene, side: int, rng: random.Random) -> None:
    colour = _pattern(scene.background)
    step = int(side * rng.uniform(0.11, 0.15))
    if scene.texture == "striped":  # diagonal bands
        slope = rng.choice((-1, 1))
        for start in range(-side, 2 * side, step):
            band = [
                (start, 0),
                (start + step // 2, 0),
                (start + step // 2 + slope * side, side),
                (start + slope * side, side),
            ]
            draw.polygon(band, fill=colour)
    elif scene.texture == "dotted":  # offset rows of dots
        radius = step // 4
        for row, cy in enumerate(range(step // 2, side, step)):
            for cx in range(step // 2 + (step // 2 if row % 2 else 0), side, step):
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif scene.texture == "checkered":
        for row, top in enumerate(range(0, side, step)):
            for column, left in enumerate(range(0, side, step)):
                if (row + column) % 2:
                    draw.rectangle((left, top, left + step - 1, top + step - 1), fill=colour)


def _shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    fill: tuple[int, int, int],
    outline: tuple[int, int, int],
    rng: random.Random,
    *,
    width: int,
) -> None:
    x, y = centre
    turn = rng.uniform(-0.3, 0.3)
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=outline, width=width)
        return
    if shape == "square":
        corners = [(radius * 1.15, math.pi / 4 + k * math.pi / 2 + turn) for k in range(4)]
    elif shape == "triangle":
        corners = [(radius * 1.15, -math.pi / 2 + k * 2 * math.pi / 3 + turn) for k in range(3)]
    elif shape == "star":
        corners = [(radius * (1.1 if k % 2 == 0 else 0.42), -math.pi / 2 + k * math.pi / 5 + turn) for k in range(10)]
    else:  # cross: a plus outline of twelve corners, thinner arms than the first renderer's
        arm, reach = radius * 0.3, radius
        outline_xy = [(arm, reach), (arm, arm), (reach, arm), (reach, -arm), (arm, -arm), (arm, -reach)]
        outline_xy += [(-px, -py) for px, py in outline_xy]
        corners = [(math.hypot(px, py), math.atan2(py, px) + turn) for px, py in outline_xy]
    points = [(x + r * math.cos(a), y + r * math.sin(a)) for r, a in corners]
    draw.polygon(points, fill=fill, outline=outline, width=width)
