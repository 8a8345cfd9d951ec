"""Exporting a ViT image tower's self-attention as one onnxruntime `Attention` op (com.microsoft).

torch's TorchScript exporter writes `nn.MultiheadAttention` as about 60 small ops per block (the packed input
projection, then Shape/Gather/Unsqueeze/Concat/Reshape/Transpose/Slice chains for the heads, scaled MatMuls and
a Softmax). onnxruntime's attention fusion looks for the subgraph of a BERT or Hugging Face CLIP export
(separate Q, K and V MatMul+Add, fixed-shape reshapes), so it fuses none of these, and dynamic int8 then
quantises the projections but leaves every head op in fp32 around them. While exporting, each plain
self-attention block of the image tower is therefore swapped for a twin that traces to `Attention(x, W, b)`:
the fused op onnxruntime runs on the CPU, and which `quantize_dynamic` turns into `QAttention`. The twin
computes the same attention in torch (it is what tracing runs); verification against torch checks the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


class _FusedSelfAttention(torch.autograd.Function):
    """Multi-head self-attention of `x` (N, L, C) with packed projection `weight` (C, 3C) and `bias` (3C),
    without the output projection; exported as onnxruntime's `Attention` op."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, channels = x.shape
        query, key, value = (
            part.reshape(batch, length, heads, channels // heads).transpose(1, 2)
            for part in (x @ weight + bias).chunk(3, dim=-1)
        )
        attended = F.scaled_dot_product_attention(query, key, value)
        return attended.transpose(1, 2).reshape(batch, length, channels)

    @staticmethod
    def symbolic(graph: Any, x: Any, weight: Any, bias: Any, heads: int) -> Any:
        fused = graph.op("com.microsoft::Attention", x, weight, bias, num_heads_i=heads)
        fused.setType(x.type())  # same shape and dtype as `x`: without it torch warns once per block at export
        return fused


def _fused_attention(
    self: Any,
    q_x: torch.Tensor,
    k_x: torch.Tensor | None = None,
    v_x: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """open_clip's `ResidualAttentionBlock.attention` for self-attention without a mask, fused."""
    if k_x is not None or v_x is not None or attn_mask is not None:
        return type(self).attention(self, q_x, k_x, v_x, attn_mask)
    attn = self.attn
    attended = _FusedSelfAttention.apply(q_x, attn.in_proj_weight.t(), attn.in_proj_bias, attn.num_heads)
    return F.linear(attended, attn.out_proj.weight, attn.out_proj.bias)


def fusable(block: Any) -> bool:
    """Whether `block` is an open_clip ViT block whose attention the fused twin reproduces: batch-first
    `nn.MultiheadAttention` with one packed, biased input projection and no cross-attention."""
    attn = getattr(block, "attn", None)
    return (
        type(block).__name__ == "ResidualAttentionBlock"
        and isinstance(attn, torch.nn.MultiheadAttention)
        and attn.batch_first
        and attn.in_proj_weight is not None
        and attn.in_proj_bias is not None
        and not hasattr(block, "ln_1_kv")
    )


@contextmanager
def fused_image_attention(model: Any) -> Iterator[int]:
    """Swap every fusable block of `model`'s ViT image tower for its fused twin while exporting; yields how
    many were swapped (0 for other architectures, which export unchanged)."""
    blocks = getattr(getattr(getattr(model, "visual", None), "transformer", None), "resblocks", [])
    swapped = [block for block in blocks if fusable(block)]
    for block in swapped:
        block.attention = _fused_attention.__get__(block)
    try:
        yield len(swapped)
    finally:
        for block in swapped:
            del block.attention
