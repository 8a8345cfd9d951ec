"""Tests of retrieval.model.specs rules that callers other than the CLI need."""

from __future__ import annotations

from pathlib import Path

from retrieval.config import DEFAULT_PRETRAINED, RANDOM_WEIGHTS
from retrieval.model.specs import ModelSpec


def test_training_starts_a_config_file_from_scratch_and_a_name_from_its_default_tag(tiny_config: Path) -> None:
    assert ModelSpec.for_training(str(tiny_config)) == ModelSpec(str(tiny_config), RANDOM_WEIGHTS)
    assert ModelSpec.for_training("ViT-B-32") == ModelSpec("ViT-B-32", DEFAULT_PRETRAINED)


def test_training_keeps_the_weights_it_is_given(tiny_config: Path, tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "best.pt")
    assert ModelSpec.for_training(str(tiny_config), checkpoint) == ModelSpec(str(tiny_config), checkpoint)
    assert ModelSpec.for_training("ViT-B-32", "none") == ModelSpec("ViT-B-32", "none")
