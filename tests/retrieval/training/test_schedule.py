"""Tests of training.schedule: linear warmup, then half a cosine down to zero."""

from __future__ import annotations

import itertools
import math

import pytest

from retrieval.training import TrainOptions
from retrieval.training.schedule import lr_at


def test_learning_rate_warms_up_then_decays_by_cosine() -> None:
    """lr_at: linear warmup over 10 steps to lr, then half a cosine to ~0 at the last of 110 steps."""
    options = TrainOptions(lr=1.0, warmup_steps=10)
    assert lr_at(0, options, 110) == pytest.approx(0.1)
    assert lr_at(4, options, 110) == pytest.approx(0.5)
    assert lr_at(9, options, 110) == pytest.approx(1.0)
    assert lr_at(10, options, 110) == pytest.approx(1.0)
    assert lr_at(60, options, 110) == pytest.approx(0.5)
    assert lr_at(109, options, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert lr_at(110, options, 110) == pytest.approx(0.0, abs=1e-12)
    after_warmup = [lr_at(step, options, 110) for step in range(10, 110)]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    # Warmup longer than the run is cut to the run; no warmup starts at the full rate.
    assert lr_at(0, TrainOptions(lr=1.0, warmup_steps=100), 5) == pytest.approx(0.25)
    assert lr_at(0, TrainOptions(lr=1.0, warmup_steps=0), 5) == pytest.approx(1.0)


def test_schedule_scales_with_lr_and_never_leaves_zero_to_lr() -> None:
    """lr=3e-4, 4 warmup steps of 20: full rate at the warmup's end, half at the cosine's midpoint (step 12),
    zero from the end on, and every rate in between within [0, lr]."""
    options = TrainOptions(lr=3e-4, warmup_steps=4)
    assert [lr_at(step, options, 20) for step in range(4)] == pytest.approx([7.5e-5, 1.5e-4, 2.25e-4, 3e-4])
    assert lr_at(12, options, 20) == pytest.approx(1.5e-4)
    assert lr_at(20, options, 20) == lr_at(25, options, 20) == pytest.approx(0.0, abs=1e-18)
    assert all(0.0 <= lr_at(step, options, 20) <= options.lr for step in range(30))
