"""Which parameters train, and how: open_clip's tower locking, and AdamW with its weight-decay groups."""

from __future__ import annotations

from typing import Any

import torch

from retrieval.training.options import TrainOptions


def lock_towers(model: Any, options: TrainOptions) -> None:
    """Freeze the image or the text tower where `options` asks to (fine-tuning one side only)."""
    if options.lock_image:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if options.lock_text:
        model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)


def make_optimizer(model: torch.nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW over the trainable parameters at `options.lr` (the schedule sets each step's rate)."""
    return torch.optim.AdamW(_param_groups(model, options.weight_decay), lr=options.lr)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, norms and the temperature."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
