"""Captioned synthetic scenes: coloured shapes on textured backgrounds, drawn with Pillow.

A scene is fully described by its `Scene` attributes, so a caption can name everything that tells it
apart from other scenes, and a test can check what a search returned. Everything is a pure function of
a seed string, so the same seed gives the same scenes, captions and pixels on every machine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
TEXTURES = ("plain", "striped", "dotted", "checkered")
COUNTS = (1, 2, 3)

HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("triangle", "blue"),
    ("circle", "yellow"),
    ("square", "purple"),
    ("star", "green"),
    ("cross", "orange"),
)
"""(shape, colour) pairs never shown in the train and validation splits: test recall on them measures
whether the model composes attributes it learned apart, and fine-tuning on them is the before/after demo."""

_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}


def plural(shape: str) -> str:
    return _PLURAL[shape]


_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "a pair of"), 3: ("three",)}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_WORDS = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle", "in the centre"),
}
_TEXTURE_WORDS = {
    "plain": ("plain", "solid", "flat"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted", "polka dot"),
    "checkered": ("checkered", "checked", "chequered"),
}
_TEMPLATES = (
    "{objects} {where} of a {texture} {bg} background",
    "{objects} {where} on a {texture} {bg} background",
    "a {texture} {bg} background with {objects} {where}",
    "{where}, {objects} against a {texture} {bg} backdrop",
    "a picture of {objects} {where}, the background is {bg} and {texture}",
    "an image showing {objects} {where} over {a_bg} {texture} background",
)
# (x0, y0, x1, y1) of the area the objects' centres fall in, as fractions of the canvas.
_REGIONS = {
    "left": (0.15, 0.15, 0.35, 0.85),
    "right": (0.65, 0.15, 0.85, 0.85),
    "top": (0.15, 0.15, 0.85, 0.35),
    "bottom": (0.15, 0.65, 0.85, 0.85),
    "center": (0.35, 0.35, 0.65, 0.65),
}
_DIAMETER = {"small": 0.13, "large": 0.22}


@dataclass(frozen=True)
class Style:
    """How big objects are drawn and where their centres go: what separates generator versions."""

    name: str
    diameter: dict[str, float]  # size -> object diameter as a fraction of the canvas
    size_jitter: float  # the diameter varies by this fraction either way
    place: Callable[[Scene, int, float, random.Random], list[tuple[float, float]]]


def _place_v1(scene: Scene, size: int, diameter: float, rng: random.Random) -> list[tuple[float, float]]:
    return _place(scene, size, diameter, rng, _REGIONS[scene.position])


V1 = Style("v1", _DIAMETER, 0.1, _place_v1)
"""The first generator: objects an eighth to a fifth of the canvas, too small to count at a 64 px input."""
V2 = Style("v2", {"small": 0.17, "large": 0.25}, 0.05, lambda *args: _place_v2(*args))
"""Objects a sixth to a quarter of the canvas, side by side around the position's anchor and whole inside
the canvas (a margin of 0.05 at least), so shape and count survive a 96 px input and training crops."""
STYLES = {style.name: style for style in (V1, V2)}


@dataclass(frozen=True)
class Scene:
    """What a picture shows; `caption_of` words it and `render` draws it."""

    shape: str
    colour: str
    size: str
    count: int
    position: str
    background: str
    texture: str

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT_PAIRS

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"held_out": self.held_out}


def sample_scene(rng: random.Random, *, held_out: bool | None) -> Scene:
    """A random scene; `held_out` True/False forces the (shape, colour) pair in/out of HELD_OUT_PAIRS,
    None draws from all pairs."""
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        pair_held_out = (shape, colour) in HELD_OUT_PAIRS
        if held_out is None or held_out == pair_held_out:
            break
    background = rng.choice([name for name in COLOURS if name != colour])
    return Scene(
        shape=shape,
        colour=colour,
        size=rng.choice(SIZES),
        count=rng.choice(COUNTS),
        position=rng.choice(POSITIONS),
        background=background,
        texture=rng.choice(TEXTURES),
    )


def caption_of(scene: Scene, rng: random.Random) -> str:
    """One natural wording of the scene, chosen by `rng`: synonyms and sentence shapes vary."""
    noun = scene.shape if scene.count == 1 else _PLURAL[scene.shape]
    objects = f"{rng.choice(_COUNT_WORDS[scene.count])} {rng.choice(_SIZE_WORDS[scene.size])} {scene.colour} {noun}"
    text = rng.choice(_TEMPLATES).format(
        objects=objects,
        where=rng.choice(_POSITION_WORDS[scene.position]),
        texture=rng.choice(_TEXTURE_WORDS[scene.texture]),
        bg=scene.background,
        a_bg=("an " if scene.background[0] in "aeiou" else "a ") + scene.background,
    )
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def partial_caption_of(scene: Scene, rng: random.Random) -> str:
    """A short caption naming only some attributes, the way people type queries ("three red circles")."""
    noun = scene.shape if scene.count == 1 else _PLURAL[scene.shape]
    count = rng.choice(_COUNT_WORDS[scene.count])
    parts = {
        "count": f"{count} {scene.colour} {noun}",
        "size": f"{rng.choice(_SIZE_WORDS[scene.size])} {scene.colour} {noun}",
        "where": f"{scene.colour} {noun} {rng.choice(_POSITION_WORDS[scene.position])}",
        "background": f"{scene.colour} {noun} on {scene.background}",
        "texture": f"{noun} on a {rng.choice(_TEXTURE_WORDS[scene.texture])} {scene.background} background",
        "scene": f"a {rng.choice(_TEXTURE_WORDS[scene.texture])} {scene.background} background",
    }
    return parts[rng.choice(list(parts))]


def short_caption_of(scene: Scene, rng: random.Random) -> str:
    """A short query-like caption naming one attribute or two (generator v2): the words users type."""
    noun = scene.shape if scene.count == 1 else _PLURAL[scene.shape]
    a_noun = f"a {noun}" if scene.count == 1 else noun
    count = rng.choice(_COUNT_WORDS[scene.count])
    size = rng.choice(_SIZE_WORDS[scene.size])
    texture = rng.choice(_TEXTURE_WORDS[scene.texture])
    forms = (
        a_noun,
        f"{count} {noun}",
        f"{count} {scene.colour} {noun}",
        rng.choice((f"something {scene.colour}", f"{scene.colour} shapes")),
        f"a {scene.colour} {noun}" if scene.count == 1 else f"{scene.colour} {noun}",
        f"{size} {noun}" if scene.count > 1 else f"a {size} {noun}",
        f"{size} {scene.colour} {noun}" if scene.count > 1 else f"a {size} {scene.colour} {noun}",
        f"{a_noun} {rng.choice(_POSITION_WORDS[scene.position])}",
        f"{scene.colour} {noun} {rng.choice(_POSITION_WORDS[scene.position])}",
        rng.choice((f"on a {scene.background} background", f"{a_noun} on {scene.background}")),
        f"a {texture} background",
        f"a {texture} {scene.background} background",
    )
    return rng.choice(forms)


def captions_of(scene: Scene, rng: random.Random, count: int, *, partial: bool = False) -> list[str]:
    """`count` different wordings of one scene (fewer only if the wordings run out); with `partial`, the
    last one names only some attributes, so a model trained on them also answers short queries."""
    captions: list[str] = []
    for attempt in range(count * 20):
        last = count > 1 and len(captions) == count - 1  # a lone caption always names everything
        caption = (
            partial_caption_of(scene, rng) if partial and last and attempt < count * 10 else caption_of(scene, rng)
        )
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    return captions


def render(scene: Scene, rng: random.Random, size: int, style: Style = V1) -> Image.Image:
    """Draw the scene on a `size` x `size` RGB canvas; positions, jitter and rotation come from `rng`."""
    image = Image.new("RGB", (size, size), _jitter(COLOURS[scene.background], rng))
    draw = ImageDraw.Draw(image)
    _draw_texture(draw, scene, size, rng)
    diameter = style.diameter[scene.size] * size * rng.uniform(1 - style.size_jitter, 1 + style.size_jitter)
    for x, y in style.place(scene, size, diameter, rng):
        _draw_shape(draw, scene.shape, (x, y), diameter / 2, _jitter(COLOURS[scene.colour], rng), rng)
    return image


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, channel + rng.randint(-amount, amount))) for channel in rgb)
    return r, g, b


def _pattern_colour(background: str) -> tuple[int, int, int]:
    """A shade of the background colour, so a striped blue background still reads as blue."""
    r, g, b = COLOURS[background]
    if (r + g + b) / 3 > 128:
        return int(r * 0.75), int(g * 0.75), int(b * 0.75)
    return int(r + (255 - r) * 0.35), int(g + (255 - g) * 0.35), int(b + (255 - b) * 0.35)


def _draw_texture(draw: ImageDraw.ImageDraw, scene: Scene, size: int, rng: random.Random) -> None:
    colour = _pattern_colour(scene.background)
    step = max(4, int(size * rng.uniform(0.09, 0.13)))
    offset = rng.randrange(step)
    if scene.texture == "striped":
        vertical = rng.random() < 0.5
        for start in range(offset - step, size, step):
            box = (start, 0, start + step // 2, size) if vertical else (0, start, size, start + step // 2)
            draw.rectangle(box, fill=colour)
    elif scene.texture == "dotted":
        radius = max(1, step // 5)
        for cx in range(offset, size, step):
            for cy in range(offset, size, step):
                draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif scene.texture == "checkered":
        for row, top in enumerate(range(0, size, step)):
            for column, left in enumerate(range(0, size, step)):
                if (row + column) % 2:
                    draw.rectangle((left, top, left + step - 1, top + step - 1), fill=colour)


def _place(
    scene: Scene, size: int, diameter: float, rng: random.Random, region: tuple[float, float, float, float]
) -> list[tuple[float, float]]:
    """Centres for `scene.count` objects inside the position's region, apart from each other."""
    x0, y0, x1, y1 = (fraction * size for fraction in region)
    centres: list[tuple[float, float]] = []
    min_gap = diameter * 1.05
    for _ in range(400):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if all(math.dist((x, y), other) >= min_gap for other in centres):
            centres.append((x, y))
            if len(centres) == scene.count:
                return centres
        else:
            min_gap *= 0.995  # crowded region: let objects come a little closer rather than loop forever
    while len(centres) < scene.count:
        centres.append((rng.uniform(x0, x1), rng.uniform(y0, y1)))
    return centres


_ANCHORS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5)}


def _place_v2(scene: Scene, size: int, diameter: float, rng: random.Random) -> list[tuple[float, float]]:
    """Centres side by side along the position's edge (around the middle: a pair or a triangle), a little
    more than a diameter apart, around the position's anchor moved by a little."""
    anchor_x, anchor_y = _ANCHORS[scene.position]
    cx, cy = (anchor_x + rng.uniform(-0.03, 0.03)) * size, (anchor_y + rng.uniform(-0.03, 0.03)) * size
    spacing = diameter * rng.uniform(1.08, 1.15)
    if scene.position == "center":
        turn = rng.uniform(0, 2 * math.pi)
        radius = 0.0 if scene.count == 1 else spacing / (2 if scene.count == 2 else math.sqrt(3))
        return [
            (
                cx + radius * math.cos(turn + k * 2 * math.pi / scene.count),
                cy + radius * math.sin(turn + k * 2 * math.pi / scene.count),
            )
            for k in range(scene.count)
        ]
    offsets = [(k - (scene.count - 1) / 2) * spacing for k in range(scene.count)]
    vertical = scene.position in ("left", "right")
    return [(cx, cy + offset) if vertical else (cx + offset, cy) for offset in offsets]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[int, int, int],
    rng: random.Random,
) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        return
    if shape == "cross":
        arm = radius * 0.36
        draw.rectangle((x - radius, y - arm, x + radius, y + arm), fill=colour)
        draw.rectangle((x - arm, y - radius, x + arm, y + radius), fill=colour)
        return
    turn = rng.uniform(-0.25, 0.25)
    if shape == "square":
        corners = [(radius * 0.85 * math.sqrt(2), math.pi / 4 + k * math.pi / 2 + turn) for k in range(4)]
    elif shape == "triangle":
        corners = [(radius * 1.1, -math.pi / 2 + k * 2 * math.pi / 3 + turn) for k in range(3)]
    else:  # star
        corners = [(radius * (1.15 if k % 2 == 0 else 0.48), -math.pi / 2 + k * math.pi / 5 + turn) for k in range(10)]
    draw.polygon([(x + r * math.cos(a), y + r * math.sin(a)) for r, a in corners], fill=colour)
