"""Validation during training: exact recall@k of the model being trained (`retrieval.quality.recall`), and
on generated data the precision@3 of the attribute benchmark's short queries (`retrieval.quality.attributes`),
which best.pt may be chosen by: full-caption recall saturates while short queries still improve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from retrieval.decode import read_and_decode
from retrieval.errors import UnreadableImageError
from retrieval.model.loading import LoadedModel
from retrieval.quality.attributes import attribute_precision, attribute_queries, scene_of
from retrieval.quality.captions import CaptionedDataset
from retrieval.quality.recall import Recall, recall_at_k


def evaluate(loaded: LoadedModel, data: CaptionedDataset, device: str, batch_size: int = 256) -> Recall:
    """Exact recall@k of the model on `data`."""
    images, texts = encode_split(loaded, data, device, batch_size)
    return recall_at_k(images, texts, data.caption_image)


SELECTION_KS = (3, 10)
"""The precisions `select_by` attributes averages. P@3 alone saturates near 100 on a few hundred validation
scenes once a model is good, and then every later checkpoint ties with the first; P@10 still moves."""


def attribute_scores(
    loaded: LoadedModel, data: CaptionedDataset, images: np.ndarray, device: str, ks: Sequence[int] = SELECTION_KS
) -> dict[int, dict[str, float]]:
    """Precision@k (k -> attribute -> value) of the benchmark's short queries over `data`'s images (`images`:
    their unit vectors), each hit checked against the scene its captions describe; images whose captions
    leave the scene open are left out. Empty if none is known (data not from the scene generator)."""
    by_image: list[list[str]] = [[] for _ in data.images]
    for text, owner in zip(data.captions, data.caption_image, strict=True):
        by_image[owner].append(text)
    known = [(position, scene) for position, captions in enumerate(by_image) if (scene := scene_of(captions))]
    if not known:
        return {}
    queries = attribute_queries()
    with torch.no_grad():
        tokens = loaded.tokenizer([query.text for query in queries]).to(device)
        texts = _unit(loaded.model.encode_text(tokens))
    kept = images[[position for position, _ in known]]
    ranked = np.argsort(-(texts @ kept.T), axis=1)[:, : max(ks)]
    table = attribute_precision(ranked, queries, [scene for _, scene in known], tuple(ks)).table
    return {k: {attribute: row[f"P@{k}"] for attribute, row in table.items()} for k in ks}


def encode_split(
    loaded: LoadedModel, data: CaptionedDataset, device: str, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of `data`'s images and captions. An unreadable image gets an all-zero vector, which scores
    0 against every caption: it is almost never found, and its captions almost never match it."""
    model = loaded.model
    model.eval()
    image_vectors, text_vectors = [], []
    unreadable: list[int] = []
    with torch.no_grad():
        for start in range(0, len(data.images), batch_size):
            pixels = []
            for position, path in enumerate(data.images[start : start + batch_size], start=start):
                try:
                    pixels.append(loaded.eval_transform(read_and_decode(str(path), min_side=64)[1].image))
                except UnreadableImageError:
                    unreadable.append(position)
                    pixels.append(torch.zeros(3, *_input_size(model)))
            image_vectors.append(_unit(model.encode_image(torch.stack(pixels).to(device))))
        for start in range(0, len(data.captions), batch_size):
            tokens = loaded.tokenizer(list(data.captions[start : start + batch_size])).to(device)
            text_vectors.append(_unit(model.encode_text(tokens)))
    images = np.concatenate(image_vectors)
    images[unreadable] = 0.0
    return images, np.concatenate(text_vectors)


def _unit(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _input_size(model: Any) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
