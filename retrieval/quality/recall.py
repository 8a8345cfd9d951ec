"""Recall@k for image-text retrieval, with CLIP_benchmark's definitions.

- text->image: the mean over captions of whether the caption's image is among its top k images;
- image->text: the mean over images of whether any of the image's captions is among its top k captions.
Ties are broken by position (the lower image or caption index ranks first), so results are
deterministic and an independent computation can reproduce them exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (1, 5, 10)
_CHUNK_CELLS = 1 << 24  # score-matrix cells per chunk: ~64 MB of float32


@dataclass(frozen=True)
class Recall:
    """Recall@k in percent for both directions, keyed by k."""

    text_to_image: dict[int, float]
    image_to_text: dict[int, float]

    @property
    def mean(self) -> float:
        """The mean of every recall value: one number to pick the best checkpoint by."""
        values = [*self.text_to_image.values(), *self.image_to_text.values()]
        return float(np.mean(values)) if values else 0.0

    @classmethod
    def from_json(cls, data: dict[str, dict[str, float]]) -> Recall:
        """The inverse of `to_json`."""
        return cls(
            {int(k[2:]): float(v) for k, v in data["text_to_image"].items()},
            {int(k[2:]): float(v) for k, v in data["image_to_text"].items()},
        )

    def to_json(self) -> dict[str, dict[str, float]]:
        return {
            "text_to_image": {f"R@{k}": value for k, value in self.text_to_image.items()},
            "image_to_text": {f"R@{k}": value for k, value in self.image_to_text.items()},
        }


def rank(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """For each query vector, the indices of its k best gallery vectors by dot product, best first, ties to
    the lower index. Scored in chunks of queries, so the full score matrix never has to fit in memory."""
    k = min(k, len(gallery))
    rows = max(1, _CHUNK_CELLS // max(1, len(gallery)))
    # BLAS may round the score of a gallery vector differently from that of an identical one elsewhere in the
    # matrix (last bit), which would break their tie at random: give every copy the score of its first copy.
    first_of: dict[bytes, int] = {}  # keyed by a 128-bit digest of the row's bytes: small keys for big galleries
    copy_of = np.fromiter(
        (
            first_of.setdefault(hashlib.blake2b(row.tobytes(), digest_size=16).digest(), index)
            for index, row in enumerate(np.ascontiguousarray(gallery))
        ),
        dtype=np.int64,
        count=len(gallery),
    )
    same = len(first_of) == len(gallery)

    def scores(chunk: np.ndarray) -> np.ndarray:
        result = chunk @ gallery.T
        return result if same else result[:, copy_of]

    parts = [
        np.argsort(-scores(queries[start : start + rows]), axis=1, kind="stable")[:, :k]
        for start in range(0, len(queries), rows)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def text_to_image_hits(ranked_images: np.ndarray, caption_image: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """`ranked_images[j]` lists image indices for caption j, best first."""
    hits = ranked_images == caption_image[:, None]
    return {k: 100.0 * float(hits[:, :k].any(axis=1).mean()) for k in ks}


def image_to_text_hits(ranked_captions: np.ndarray, caption_image: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """`ranked_captions[i]` lists caption indices for image i, best first (-1 pads a short list)."""
    owners = np.where(ranked_captions >= 0, caption_image[np.clip(ranked_captions, 0, None)], -1)
    hits = owners == np.arange(len(ranked_captions))[:, None]
    return {k: 100.0 * float(hits[:, :k].any(axis=1).mean()) for k in ks}


def recall_at_k(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    caption_image: Sequence[int] | np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
) -> Recall:
    """Exact recall@k from unit vectors (cosine = dot product): the reference every index is checked against."""
    owners = np.asarray(caption_image, dtype=np.int64)
    if len(owners) != len(text_vectors):
        raise ValueError(f"{len(text_vectors)} caption vectors but {len(owners)} caption owners")
    depth = max(ks)
    ranked_images = rank(text_vectors, image_vectors, depth)
    ranked_captions = rank(image_vectors, text_vectors, depth)
    return Recall(
        text_to_image_hits(ranked_images, owners, ks),
        image_to_text_hits(ranked_captions, owners, ks),
    )
