"""Fixtures of the training tests: generated scenes and one uninterrupted run, made once per test module.

Module-scoped like `one_torch_thread`, which every training test module asks for first: so these runs train
on the same thread count as the module's tests, and a resumed run can equal `full_run` to the last float.
"""

from __future__ import annotations

import pytest

from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset, load_captions
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.training import TrainReport, train
from tests.retrieval.training.runs import BASE


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaptionedDataset, CaptionedDataset]:
    """(train, val): 32 and 16 generated 32 px scenes with 3 captions each."""
    folder = generate_dataset(
        tmp_path_factory.mktemp("train-scenes") / "data", seed=1, sizes={"train": 32, "val": 16}, image_size=32
    ).folder
    return load_captions(folder / "train.jsonl"), load_captions(folder / "val.jsonl")


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_spec: ModelSpec, scenes: tuple[CaptionedDataset, CaptionedDataset]
) -> TrainReport:
    """One uninterrupted run with BASE options, no validation data."""
    return train(tiny_spec, scenes[0], tmp_path_factory.mktemp("full") / "run", BASE)
