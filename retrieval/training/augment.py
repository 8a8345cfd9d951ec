"""Training-only augmentation: what real photos do to a picture, kept small enough not to change what it shows.

JPEG at varied quality, blur, zoom in or out with a shift, small rotations, and hue, brightness, contrast
and saturation jitter, each applied with some probability, then the model's own evaluation transform
(resize, crop, normalise). Every random draw comes from torch's global generator, which the batch loader
seeds per batch, so a resumed run sees the same pixels.

The limits keep the scene's meaning: a hue turn of at most 0.02 (7 degrees) keeps orange apart from red
and yellow, a zoom in of at most 5% with a shift of at most 3% cuts nothing of an object drawn a margin
from the edge, and a rotation of 8 degrees leaves a triangle a triangle and "left" on the left.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import ColorJitter

MAX_ROTATION_DEGREES = 8.0
ZOOM = (0.92, 1.05)
MAX_SHIFT = 0.03
JPEG_QUALITY = (25, 90)
BLUR_RADIUS = (0.3, 1.2)
COLOUR_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}
P_GEOMETRY, P_COLOUR, P_BLUR, P_JPEG = 0.8, 0.8, 0.3, 0.5


def augmenting(eval_transform: Callable[[Any], torch.Tensor]) -> Callable[[Image.Image], torch.Tensor]:
    """A training transform: `augment` then the model's `eval_transform`."""

    def transform(image: Image.Image) -> torch.Tensor:
        return eval_transform(augment(image))

    return transform


def augment(image: Image.Image) -> Image.Image:
    """One random photo-like distortion of `image` (RGB), drawn from torch's global generator."""
    image = image.convert("RGB")
    if _chance(P_GEOMETRY):
        image = _geometry(image)
    if _chance(P_COLOUR):
        image = ColorJitter(**COLOUR_JITTER)(image)
    if _chance(P_BLUR):
        image = image.filter(ImageFilter.GaussianBlur(_uniform(*BLUR_RADIUS)))
    if _chance(P_JPEG):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(_uniform(*JPEG_QUALITY)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def _geometry(image: Image.Image) -> Image.Image:
    """Rotate, zoom and shift about the centre; the uncovered corners take the background's colour."""
    width, height = image.size
    corner = image.getpixel((0, 0))
    rotated = image.rotate(
        _uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES), Image.Resampling.BILINEAR, fillcolor=corner
    )
    zoom = _uniform(*ZOOM)
    side_x, side_y = width / zoom, height / zoom
    left = (width - side_x) / 2 + _uniform(-MAX_SHIFT, MAX_SHIFT) * width
    top = (height - side_y) / 2 + _uniform(-MAX_SHIFT, MAX_SHIFT) * height
    box = (left, top, left + side_x, top + side_y)
    return rotated.transform((width, height), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR, fillcolor=corner)


def _chance(probability: float) -> bool:
    return bool(torch.rand(()) < probability)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))
