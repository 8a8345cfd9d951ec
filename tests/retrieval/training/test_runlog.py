"""Tests of training.runlog: train.json says how the run was set up, where it stands and how to use best.pt."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from retrieval.model.specs import ModelSpec
from retrieval.training.checkpoint import BEST_CHECKPOINT, RunState
from retrieval.training.options import RunSetup
from retrieval.training.runlog import RUN_LOG, write_run_log
from tests.retrieval.training.runs import BASE


def test_run_log_holds_setup_and_history_and_is_replaced_whole(
    tiny_spec: ModelSpec, scenes: Any, tmp_path: Path
) -> None:
    train_data, val_data = scenes
    setup = RunSetup(tiny_spec, BASE, train_data, val_data.head(10), tmp_path, "cpu")
    state = RunState(step=4, best_score=50.0, best_step=4, best_val={"mean": 50.0}, history=[{"step": 4}])
    write_run_log(setup, state)
    log = json.loads((tmp_path / RUN_LOG).read_text())
    assert (log["model"], log["base_weights"]) == (tiny_spec.model, "none")
    assert log["options"]["batch_size"] == BASE.batch_size and log["options"]["max_steps"] is None
    assert (log["train_images"], log["train_captions"], log["val_images"]) == (32, len(train_data.captions), 10)
    assert (log["best_step"], log["best_val"], log["history"]) == (4, {"mean": 50.0}, [{"step": 4}])
    assert log["use_with"] == f"--model {tiny_spec.model} --pretrained {tmp_path.resolve() / BEST_CHECKPOINT}"
    write_run_log(replace(setup, val_data=None), replace(state, history=[{"step": 4}, {"step": 8}]))
    log = json.loads((tmp_path / RUN_LOG).read_text())
    assert log["val_images"] == 0 and len(log["history"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == [RUN_LOG]  # no temporary file left behind
