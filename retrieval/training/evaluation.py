"""Validation during training: exact recall@k of the model being trained (`retrieval.quality.recall`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from retrieval.decode import read_and_decode
from retrieval.errors import UnreadableImageError
from retrieval.model.loading import LoadedModel
from retrieval.quality.captions import CaptionedDataset
from retrieval.quality.recall import Recall, recall_at_k


def evaluate(loaded: LoadedModel, data: CaptionedDataset, device: str, batch_size: int = 256) -> Recall:
    """Exact recall@k of the model on `data`. An unreadable image gets an all-zero vector, which scores 0
    against every caption: it is almost never found, and its captions almost never match it."""
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
    return recall_at_k(images, np.concatenate(text_vectors), data.caption_image)


def _unit(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _input_size(model: Any) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
