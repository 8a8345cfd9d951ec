"""The image tower's self-attention exported as onnxruntime's fused `Attention` op, and exports made by an
older exporter being redone."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from retrieval.config import INT8_MIN_COSINE
from retrieval.model import onnx_attention
from retrieval.model.encoder import Encoder
from retrieval.model.loading import load_model
from retrieval.model.onnx_files import EXPORT_VERSIONS, StaleExportWarning
from retrieval.model.specs import ModelSpec
from tests import imagefactory

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    return imagefactory.pattern_images(tmp_path_factory.mktemp("attention-images"), 5)


def op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def test_the_fused_twin_equals_open_clip_attention(tiny_spec: ModelSpec, one_torch_thread: None) -> None:
    """The twin traced in place of each ViT block's attention computes open_clip's attention, any batch size."""
    model = load_model(tiny_spec, warn_random=False).model.eval()
    blocks = list(model.visual.transformer.resblocks)
    assert blocks and all(onnx_attention.fusable(block) for block in blocks)
    width = blocks[0].attn.embed_dim
    for batch in (1, 5):
        tokens = torch.randn(batch, 17, width, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            for block in blocks:
                expected = block.attention(tokens)
                twin = onnx_attention._fused_attention(block, tokens)
                torch.testing.assert_close(twin, expected, atol=1e-5, rtol=1e-5)


def test_a_vit_image_tower_runs_fused_attention(
    tiny_spec: ModelSpec, tmp_path: Path, images: list[Image.Image]
) -> None:
    """The ViT image tower is exported with one `Attention` op per block and no unfused softmax, still gives
    torch's vectors, and int8 quantises it to `QAttention`; the text tower (causal mask) is left as it was."""
    torch_encoder = Encoder(tiny_spec, device="cpu", backend="torch")
    fp32 = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
    int8 = Encoder(tiny_spec, device="cpu", backend="onnx", precision="int8", onnx_dir=tmp_path)
    expected = torch_encoder.encode_images(images)
    np.testing.assert_allclose(fp32.encode_images(images), expected, atol=TOLERANCE)
    assert (int8.encode_images(images) * expected).sum(axis=1).min() >= INT8_MIN_COSINE
    assert fp32.onnx is not None
    folder = fp32.onnx.folder
    layers = len(load_model(tiny_spec, warn_random=False).model.visual.transformer.resblocks)
    image_ops = op_counts(folder.tower_path("image"))
    assert image_ops["Attention"] == layers and image_ops["Softmax"] == 0
    assert op_counts(folder.tower_path("image-int8"))["QAttention"] == layers
    assert op_counts(folder.tower_path("text"))["Attention"] == 0
    manifest = json.loads(folder.manifest_path.read_text())
    assert manifest["towers"]["image"]["fused_attention"] == layers
    for tower in ("image", "text", "image-int8"):
        assert manifest["towers"][tower]["export_version"] == EXPORT_VERSIONS[tower]


def test_an_export_by_an_older_exporter_is_made_again(
    tiny_spec: ModelSpec, tmp_path: Path, images: list[Image.Image]
) -> None:
    """A tower recorded without the current export version (as every export before fused attention was) is
    exported again, with a warning, while a current one (the text tower here) is kept as it is."""
    first = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
    expected = first.encode_images(images)
    first.encode_texts(["a red car"])
    assert first.onnx is not None
    folder = first.onnx.folder
    manifest = json.loads(folder.manifest_path.read_text())
    del manifest["towers"]["image"]["export_version"]
    folder.manifest_path.write_text(json.dumps(manifest))
    text_stamp = folder.tower_path("text").stat().st_mtime_ns
    with pytest.warns(StaleExportWarning, match="older version of the exporter"):
        again = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path).encode_images(images)
    np.testing.assert_allclose(again, expected, atol=TOLERANCE)
    manifest = json.loads(folder.manifest_path.read_text())
    assert manifest["towers"]["image"]["export_version"] == EXPORT_VERSIONS["image"]
    assert folder.tower_path("text").stat().st_mtime_ns == text_stamp
