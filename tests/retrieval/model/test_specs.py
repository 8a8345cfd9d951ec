"""Tests of retrieval.model.specs rules that callers other than the CLI need."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from retrieval.config import DEFAULT_PRETRAINED, RANDOM_WEIGHTS
from retrieval.model.specs import ModelSpec, open_clip_name


def test_training_starts_a_config_file_from_scratch_and_a_name_from_its_default_tag(tiny_config: Path) -> None:
    assert ModelSpec.for_training(str(tiny_config)) == ModelSpec(str(tiny_config), RANDOM_WEIGHTS)
    assert ModelSpec.for_training("ViT-B-32") == ModelSpec("ViT-B-32", DEFAULT_PRETRAINED)


def test_training_keeps_the_weights_it_is_given(tiny_config: Path, tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "best.pt")
    assert ModelSpec.for_training(str(tiny_config), checkpoint) == ModelSpec(str(tiny_config), checkpoint)
    assert ModelSpec.for_training("ViT-B-32", "none") == ModelSpec("ViT-B-32", "none")


def test_config_files_are_registered_with_open_clip_without_leaving_files_behind(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each config is registered under a name of its content; the copy open_clip reads is gone at once, and
    both configs still build after the second registration made open_clip rescan its paths."""
    import json

    import open_clip

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    other = tmp_path / "other.json"
    config = json.loads(tiny_config.read_text())
    other.write_text(json.dumps(config | {"embed_dim": config["embed_dim"] * 2}))
    names = [open_clip_name(ModelSpec(str(path), RANDOM_WEIGHTS)) for path in (tiny_config, other)]
    assert len(set(names)) == 2 and all(name in open_clip.list_models() for name in names)
    assert list((tmp_path / "tmp").iterdir()) == []
    widths = [open_clip.create_model(name).text_projection.shape[1] for name in names]
    assert widths == [config["embed_dim"], config["embed_dim"] * 2]
