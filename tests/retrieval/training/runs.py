"""What the training tests share: the small run every test starts from and ways to look into its files.

Every run trains the session's tiny config from scratch on a few dozen generated 32 px scenes, on the CPU
with one torch thread (the machine is shared; two threads fighting another job are much slower than one).
Checkpoints are written to tmp folders and loaded back through the same paths users take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from retrieval.errors import TrainingError
from retrieval.model.loading import LoadedModel, load_model
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import CaptionedDataset
from retrieval.training import TrainOptions, train

BASE = TrainOptions(epochs=3, batch_size=8, lr=1e-3, warmup_steps=2, device="cpu", eval_every=1000, seed=0)
"""32 images in batches of 8: 4 steps per epoch, 12 in all; one evaluation (and save) at the end only."""
TOTAL_STEPS = 12

StateDict = dict[str, torch.Tensor]


def weights(path: Path) -> StateDict:
    state: StateDict = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return state


def initial_weights(spec: ModelSpec) -> StateDict:
    """The from-scratch model every run starts from (random weights are seeded, so every load is equal)."""
    model = load_model(spec, warn_random=False).model
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def with_weights(spec: ModelSpec, state: StateDict) -> LoadedModel:
    loaded = load_model(spec, warn_random=False)
    loaded.model.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    loaded.model.eval()
    return loaded


def training_error(spec: ModelSpec, data: CaptionedDataset, output: Path, options: TrainOptions, **kw: Any) -> str:
    with pytest.raises(TrainingError) as caught:
        train(spec, data, output, options, **kw)
    return str(caught.value)
