"""Tests of training.evaluation against the exact reference: the Encoder's vectors through recall_at_k."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from retrieval.model.encoder import Encoder
from retrieval.model.loading import load_model
from retrieval.model.specs import ModelSpec
from retrieval.quality.captions import load_captions
from retrieval.quality.recall import recall_at_k
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.training.evaluation import evaluate
from tests import imagefactory

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_evaluate_matches_encoder_recall_with_unreadable_image_as_zero_vector(
    tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    """12 scenes, one a zero-byte file: evaluate's recall equals recall_at_k over the Encoder's vectors with
    that image's vector all zeros; batches smaller than the data change nothing."""
    folder = generate_dataset(tmp_path / "data", seed=4, sizes={"val": 12}, image_size=32).folder
    data = load_captions(folder / "val.jsonl")
    broken = imagefactory.zero_byte(data.images[3])
    images = []
    for path in data.images:
        if path == broken:
            images.append(Image.new("RGB", (32, 32)))
            continue
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    encoder = Encoder(tiny_spec, device="cpu")
    image_vectors = encoder.encode_images(images)
    image_vectors[3] = 0.0
    expected = recall_at_k(image_vectors, encoder.encode_texts(list(data.captions)), data.caption_image)
    loaded = load_model(tiny_spec, warn_random=False)
    for batch_size in (256, 5):
        got = evaluate(loaded, data, "cpu", batch_size=batch_size)
        assert got.text_to_image == pytest.approx(expected.text_to_image)
        assert got.image_to_text == pytest.approx(expected.image_to_text)
