"""Export an open_clip model's towers to ONNX, verify each against torch, and quantise the image tower.

The exporter is torch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`, opset 17): it works
offline with what clipsearch installs, while the dynamo exporter needs onnxscript. Tracing records Python
integers as constants, so a batch size can end up baked into the graph: open_clip's `AttentionPool2d` (the
ModifiedResNet head) does that through `F.multi_head_attention_forward`, and is swapped for an equivalent
written with batch-free reshapes while exporting. Every export is traced with one batch size and verified
with another, so any other baked-in batch size fails verification instead of giving wrong vectors later.
A ViT image tower's self-attention is exported as onnxruntime's fused `Attention` op (see onnx_attention.py),
which dynamic int8 quantisation turns into `QAttention`.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.atomic import atomic_path
from retrieval.config import INT8_MIN_COSINE, ONNX_MAX_ABS_DIFF, ONNX_MIN_COSINE
from retrieval.errors import OnnxExportError
from retrieval.model.onnx_attention import fused_image_attention
from retrieval.model.onnx_backend import OnnxTower
from retrieval.model.onnx_files import ExportFolder, data_path
from retrieval.model.tokenizer import ClipTokenizer

OPSET = 17
TRACE_BATCH, VERIFY_BATCH = 2, 3
INT8_OPS = ["MatMul", "Gemm", "Attention"]
VERIFY_TEXTS = (
    "a red car",
    "Café crème — 東京の夜景 🐶",
    " ".join(["three large blue triangles on a striped background"] * 12),  # longer than any context
)


class _Tower(torch.nn.Module):
    """One tower of an open_clip model, returning L2-normalised float32 vectors as the encoder does."""

    def __init__(self, model: Any, tower: str) -> None:
        super().__init__()
        self.model = model
        self.encode = model.encode_image if tower == "image" else model.encode_text

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode(batch).float(), dim=-1)


def _attention_pool(self: Any, x: torch.Tensor) -> torch.Tensor:
    """open_clip's `AttentionPool2d.forward` without Python batch sizes: the same attention of the mean token
    over all tokens (the only output it keeps), written with -1 reshapes so tracing keeps the batch dynamic."""
    tokens = x.flatten(2).permute(2, 0, 1)  # (HW)NC
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    tokens = tokens + self.positional_embedding[:, None, :].to(tokens.dtype)
    channels, heads = tokens.shape[-1], self.num_heads
    head_dim = channels // heads
    query = F.linear(tokens[:1], self.q_proj.weight, self.q_proj.bias)
    key = F.linear(tokens, self.k_proj.weight, self.k_proj.bias)
    value = F.linear(tokens, self.v_proj.weight, self.v_proj.bias)
    query, key, value = (t.reshape(t.shape[0], -1, heads, head_dim).permute(1, 2, 0, 3) for t in (query, key, value))
    weights = torch.softmax((query / math.sqrt(head_dim)) @ key.transpose(-2, -1), dim=-1)
    pooled = (weights @ value).permute(0, 2, 1, 3).reshape(-1, channels)
    return F.linear(pooled, self.c_proj.weight, self.c_proj.bias)


@contextmanager
def _traceable(model: Any) -> Iterator[None]:
    """Swap a ModifiedResNet's attention pool for its trace-safe twin while exporting."""
    pool = getattr(getattr(model, "visual", None), "attnpool", None)
    if pool is None or type(pool).__name__ != "AttentionPool2d":
        yield
        return
    pool.forward = _attention_pool.__get__(pool)
    try:
        yield
    finally:
        del pool.forward


def image_batch(model: Any, rows: int) -> torch.Tensor:
    """A fixed, seeded batch of normalised pixel tensors of the model's input size."""
    size = model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(0)
    return torch.randn(rows, 3, height, width, generator=generator)


def export_tower(model: Any, tower: str, example: torch.Tensor, target: Path) -> int:
    """Trace `tower` ("image" or "text") on `example` and write it to `target` atomically (0600); returns how
    many attention blocks were exported as fused `Attention` ops (image tower of a ViT only)."""
    module = _Tower(model, tower).eval()
    try:
        with ExitStack() as stack:
            temporary = stack.enter_context(atomic_path(target, private=True))
            stack.enter_context(_traceable(model))
            fused = stack.enter_context(fused_image_attention(model)) if tower == "image" else 0
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")  # TracerWarnings about Python values, checked by verification
            torch.onnx.export(
                module,
                (example,),
                str(temporary),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["embedding"],
                dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            )
    except OnnxExportError:
        raise
    except Exception as exc:  # torch raises many kinds while tracing an unusual architecture
        raise OnnxExportError(f"cannot export the {tower} tower to ONNX: {exc}", parameters=("backend",)) from exc
    if tower == "text":
        split_weights(target)
    return fused


def split_weights(target: Path) -> None:
    """Move the weights of the ONNX file `target` into `<target>.data` beside it (ONNX external data), leaving
    the graph in `target`. onnxruntime opens a model in this form in half the time (ViT-B-32's 254 MB text
    tower: 0.33 s of CPU instead of 0.64), which is most of what a cold text query waits for. The weights are
    written first, each file atomically and 0600; the caller records the pair only after verifying it."""
    import tempfile

    import onnx

    data = data_path(target)
    model = onnx.load(str(target))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".split-") as scratch:
        onnx.save_model(model, str(Path(scratch) / target.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name, size_threshold=1024)  # fmt: skip
        for name in (data.name, target.name):
            with atomic_path(target.parent / name, private=True) as temporary:
                (Path(scratch) / name).chmod(0o600)
                os.replace(Path(scratch) / name, temporary)


def verify_tower(
    model: Any, tower: str, path: Path, batch: torch.Tensor, *, max_abs: float | None, min_cosine: float
) -> dict[str, float]:
    """Compare the ONNX file at `path` with torch on `batch`; raise `OnnxExportError` if any vector differs by
    more than `max_abs` in a component (None: not checked, for int8) or has a cosine below `min_cosine`."""
    with torch.inference_mode():
        expected = _Tower(model, tower).eval()(batch).numpy()
    got = OnnxTower(path)(batch.numpy())
    difference = float(np.abs(expected - got).max()) if expected.shape == got.shape else math.inf
    cosine = float((expected * got).sum(axis=1).min()) if expected.shape == got.shape else -1.0
    if (max_abs is not None and not difference <= max_abs) or not cosine >= min_cosine:
        raise OnnxExportError(
            f"the ONNX export of the {tower} tower ({path}) disagrees with torch on a fixed batch: max abs "
            f"difference {difference:.3g} (allowed {max_abs}), min cosine {cosine:.6f} (required {min_cosine}). "
            "It is not used; use `backend` torch for this model.",
            parameters=("backend",),
        )
    return {"max_abs_diff": difference, "min_cosine": cosine, "verify_batch": len(batch)}


def quantize_image(model: Any, folder: ExportFolder) -> dict[str, Any]:
    """The int8 image tower: onnxruntime's dynamic quantisation of the verified fp32 export's matrix products
    and fused attention (INT8_OPS), checked against torch's fp32 vectors by cosine (its recall cost is what
    `bench recall` measures). Convolutions stay fp32: onnxruntime's ConvInteger made the ModifiedResNet 4x
    slower than fp32, while int8 MatMuls alone are faster on both architectures."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder.tower_path("image-int8")
    try:
        with atomic_path(target, private=True) as temporary, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                folder.tower_path("image"), temporary, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS
            )
    except Exception as exc:
        raise OnnxExportError(f"cannot quantise the image tower to int8: {exc}", parameters=("precision",)) from exc
    batch = image_batch(model, VERIFY_BATCH)
    facts = verify_tower(model, "image", target, batch, max_abs=None, min_cosine=INT8_MIN_COSINE)
    return {**facts, "quantized_ops": INT8_OPS}


def export_fp32(model: Any, tower: str, folder: ExportFolder, tokenizer: Any) -> dict[str, Any]:
    """Export and verify one fp32 tower into `folder`; `tokenizer` makes the text tower's inputs."""
    if tower == "image":
        example, batch = image_batch(model, TRACE_BATCH), image_batch(model, VERIFY_BATCH)
    else:
        example, batch = tokens(tokenizer, VERIFY_TEXTS[:TRACE_BATCH]), tokens(tokenizer, VERIFY_TEXTS)
    fused = export_tower(model, tower, example, folder.tower_path(tower))
    facts = verify_tower(
        model, tower, folder.tower_path(tower), batch, max_abs=ONNX_MAX_ABS_DIFF, min_cosine=ONNX_MIN_COSINE
    )
    return {**facts, "fused_attention": fused}


def tokens(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    ids = tokenizer(list(texts))
    return ids if isinstance(ids, torch.Tensor) else torch.from_numpy(ids)


def tokenizer_facts(name: str, tokenizer: Any, folder: ExportFolder) -> dict[str, Any]:
    """How a query is tokenised without open_clip: for a CLIP BPE tokenizer whose options the port reproduces
    (checked on VERIFY_TEXTS), its vocab file copied into `folder` and its options; else open_clip's."""
    from open_clip import get_model_config
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from retrieval.model.tokenizer import supported

    kwargs = dict((get_model_config(name) or {}).get("text_cfg", {}).get("tokenizer_kwargs", {}))
    if type(tokenizer) is not SimpleTokenizer or not supported(kwargs):
        return {"kind": "open_clip"}
    vocab = folder.path / Path(default_bpe()).name
    with atomic_path(vocab, private=True) as temporary:
        shutil.copyfile(default_bpe(), temporary)
    options: dict[str, Any] = {
        "context_length": int(tokenizer.context_length),
        "clean": str(kwargs.get("clean", "lower")),
        "additional_special_tokens": list(kwargs.get("additional_special_tokens") or []),
    }
    ported = ClipTokenizer(vocab, **options)
    if not np.array_equal(ported(list(VERIFY_TEXTS)), tokenizer(list(VERIFY_TEXTS)).numpy()):
        return {"kind": "open_clip"}
    return {"kind": "clip-bpe", "vocab": vocab.name, **options}
