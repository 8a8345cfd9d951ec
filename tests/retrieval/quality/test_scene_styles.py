"""The scene styles `clipsearch generate-dataset` offers (named in config, so the CLI starts without the
generator) are exactly the styles the generator draws."""

from __future__ import annotations

from retrieval import config
from retrieval.quality.scene_dataset import GENERATORS


def test_the_offered_styles_are_the_generators_styles() -> None:
    assert tuple(GENERATORS) == config.STYLE_CHOICES
    assert config.DEFAULT_STYLE in GENERATORS
