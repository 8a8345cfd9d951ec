"""Tests of training.checkpoint: best.pt loads wherever an open_clip checkpoint does; last.pt holds every key
a resume needs, and a file lacking one is refused."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.errors import TrainingError
from retrieval.model.encoder import Encoder
from retrieval.model.loading import load_model
from retrieval.model.specs import ModelSpec, identity_of
from retrieval.quality.captions import CaptionedDataset
from retrieval.training import TrainReport, train
from retrieval.training.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_KEYS,
    LAST_CHECKPOINT,
    OPTIONAL_KEYS,
    Checkpoint,
    RunIdentity,
    RunState,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from retrieval.training.parameters import make_optimizer
from tests.retrieval.training.runs import BASE, TOTAL_STEPS, training_error, weights, with_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _val_images(data: CaptionedDataset, count: int) -> list[Image.Image]:
    images = []
    for path in data.images[:count]:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def test_best_checkpoint_loads_in_the_encoder(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport
) -> None:
    """best.pt is an open_clip checkpoint: the Encoder names it by content hash and its vectors are those of the
    trained weights (computed here straight from last.pt, which holds the same step without validation)."""
    best = full_run.best_checkpoint
    assert best == full_run.output / BEST_CHECKPOINT and full_run.best_step == TOTAL_STEPS
    trained = weights(full_run.output / LAST_CHECKPOINT)
    assert all(torch.equal(tensor, trained[name]) for name, tensor in weights(best).items())
    encoder = Encoder(ModelSpec(str(tiny_config), str(best)), device="cpu")
    assert encoder.identity.weights == f"checkpoint sha256:{hashlib.sha256(best.read_bytes()).hexdigest()[:16]}"
    assert encoder.identity.architecture == identity_of(tiny_spec).architecture
    texts = ["a small red circle on the left of a plain blue background", "three large green crosses"]
    images = _val_images(scenes[1], 4)
    text_vectors, image_vectors = encoder.encode_texts(texts), encoder.encode_images(images)
    reference = with_weights(tiny_spec, trained)
    with torch.no_grad():
        expected_text = reference.model.encode_text(reference.tokenizer(texts))
        expected_image = reference.model.encode_image(torch.stack([reference.eval_transform(i) for i in images]))
    expected_text = torch.nn.functional.normalize(expected_text, dim=-1).numpy()
    expected_image = torch.nn.functional.normalize(expected_image, dim=-1).numpy()
    np.testing.assert_allclose(text_vectors, expected_text, atol=1e-5)
    np.testing.assert_allclose(image_vectors, expected_image, atol=1e-5)
    untrained = Encoder(tiny_spec, device="cpu").encode_texts(texts)
    assert not np.allclose(untrained, text_vectors, atol=1e-3)


def test_fp16_weights_give_a_smaller_best_checkpoint_that_loads(
    tiny_spec: ModelSpec, tiny_config: Path, scenes: Any, full_run: TrainReport, tmp_path: Path
) -> None:
    """fp16_weights=True: best.pt holds float16 tensors, is much smaller, and loads into a float32 model whose
    vectors match the full-precision weights of the same run."""
    output = tmp_path / "run"
    train(tiny_spec, scenes[0], output, replace(BASE, epochs=1, batch_size=16, fp16_weights=True))
    half = weights(output / BEST_CHECKPOINT)
    assert {t.dtype for t in half.values() if t.is_floating_point()} == {torch.float16}
    assert (output / BEST_CHECKPOINT).stat().st_size < 0.6 * full_run.best_checkpoint.stat().st_size
    loaded = load_model(ModelSpec(str(tiny_config), str(output / BEST_CHECKPOINT)), warn_random=False)
    for name, tensor in loaded.model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, half[name].float()), name
    texts = ["two tiny white stars at the top", "a big black square in the middle"]
    from_half = Encoder(ModelSpec(str(tiny_config), str(output / BEST_CHECKPOINT)), device="cpu").encode_texts(texts)
    full = with_weights(tiny_spec, weights(output / LAST_CHECKPOINT))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(full.model.encode_text(full.tokenizer(texts)), dim=-1).numpy()
    cosines = (from_half * expected).sum(axis=1)
    assert cosines.min() > 0.999


def _checkpoint(spec: ModelSpec) -> Checkpoint:
    """A full checkpoint of the tiny model after one optimizer step (so AdamW has moments to save)."""
    model = load_model(spec, warn_random=False).model
    optimizer = make_optimizer(model, BASE)
    model.logit_scale.sum().backward()
    optimizer.step()
    state = RunState(step=3, best_score=41.5, best_step=2, best_val={"mean": 41.5}, history=[{"step": 2}])
    run = RunIdentity(options=asdict(BASE), base_model=identity_of(spec).key, data="0123456789abcdef")
    return Checkpoint(model.state_dict(), optimizer.state_dict(), state, run)


def test_checkpoint_round_trip_keeps_every_key(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """The file holds exactly CHECKPOINT_KEYS, in order, and loads back equal: weights, optimizer moments,
    where the run stands and what it learns from."""
    written = _checkpoint(tiny_spec)
    save_checkpoint(written, tmp_path / LAST_CHECKPOINT)
    assert list(torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)) == list(CHECKPOINT_KEYS)
    assert len(CHECKPOINT_KEYS) == len(set(CHECKPOINT_KEYS)) == 11
    read = load_checkpoint(tmp_path / LAST_CHECKPOINT, "cpu")
    assert (read.state, read.run) == (written.state, written.run)
    assert read.state_dict.keys() == written.state_dict.keys()
    assert all(torch.equal(tensor, written.state_dict[name]) for name, tensor in read.state_dict.items())
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in written.optimizer["state"].values()]
    assert moments and read.optimizer["param_groups"] == written.optimizer["param_groups"]
    read_moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in read.optimizer["state"].values()]
    pairs = zip(moments, read_moments, strict=True)
    assert all(torch.equal(a, b) for ours, theirs in pairs for a, b in zip(ours, theirs, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]  # no temporary file left behind


@pytest.mark.parametrize("missing", ["optimizer", "history", "data"])
def test_checkpoint_missing_a_key_is_refused_by_name(tiny_spec: ModelSpec, tmp_path: Path, missing: str) -> None:
    save_checkpoint(_checkpoint(tiny_spec), tmp_path / "full.pt")
    saved = torch.load(tmp_path / "full.pt", weights_only=True)
    del saved[missing]
    torch.save(saved, tmp_path / "partial.pt")
    with pytest.raises(TrainingError, match=f"not a full training checkpoint: it lacks {missing};"):
        load_checkpoint(tmp_path / "partial.pt", "cpu")


def test_resuming_from_weights_only_is_refused(tiny_spec: ModelSpec, scenes: Any, tmp_path: Path) -> None:
    """A best.pt copied over last.pt holds weights only: resume names what it lacks instead of a KeyError."""
    output = tmp_path / "run"
    train(tiny_spec, scenes[0], output, replace(BASE, epochs=1, batch_size=16))
    (output / LAST_CHECKPOINT).write_bytes((output / BEST_CHECKPOINT).read_bytes())
    message = training_error(tiny_spec, scenes[0], output, replace(BASE, epochs=1, batch_size=16), resume=True)
    assert "not a full training checkpoint" in message
    assert (
        f"lacks {', '.join(key for key in CHECKPOINT_KEYS if key != 'state_dict' and key not in OPTIONAL_KEYS)};"
        in message
    )


def test_equal_weights_give_equal_files(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """The bytes of best.pt depend on the weights only, not on the temporary name it was written under:
    a checkpoint's content hash is the identity of its weights."""
    model = load_model(tiny_spec, warn_random=False).model
    save_weights(model, tmp_path / "a.pt", half=False)
    save_weights(model, tmp_path / "b.pt", half=False)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]


def test_run_identity_refuses_every_difference_but_runtime_options() -> None:
    saved = RunIdentity(options=asdict(BASE), base_model="model A", data="digest A")
    runtime = replace(BASE, workers=3, device="cuda", eval_every=7, val_images=5, fp16_weights=True, max_steps=2)
    saved.check_resumable_as(RunIdentity(asdict(runtime), "model A", "digest A"))
    with pytest.raises(TrainingError) as caught:
        saved.check_resumable_as(RunIdentity(asdict(replace(BASE, batch_size=4)), "model B", "digest B"))
    message = str(caught.value)
    assert "batch_size=8 (now 4)" in message and "model model A (now model B)" in message
    assert "training data (images or captions changed)" in message
