"""The run log `train.json`: a run's settings, data sizes and every evaluation, readable without torch."""

from __future__ import annotations

import json
from dataclasses import asdict

from retrieval.atomic import write_atomic
from retrieval.training.checkpoint import BEST_CHECKPOINT, RunState
from retrieval.training.options import RunSetup

RUN_LOG = "train.json"


def write_run_log(setup: RunSetup, state: RunState) -> None:
    """Replace `train.json` in the run's folder with where the run stands, and how to use its best weights."""
    spec = setup.spec
    log = {
        "model": spec.model,
        "base_weights": spec.pretrained,
        "options": asdict(setup.options),
        "train_images": len(setup.train_data),
        "train_captions": len(setup.train_data.captions),
        "val_images": len(setup.val_data) if setup.val_data is not None else 0,
        "best_step": state.best_step,
        "best_val": state.best_val,
        "history": state.history,
        "use_with": f"--model {spec.model} --pretrained {setup.folder.resolve() / BEST_CHECKPOINT}",
    }
    write_atomic(setup.folder / RUN_LOG, json.dumps(log, indent=2) + "\n")
