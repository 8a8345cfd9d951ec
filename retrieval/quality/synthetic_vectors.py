"""Synthetic CLIP-like embeddings for ANN tests and benchmarks, at any size, in bounded memory.

Vectors drawn near database points make any ANN index look perfect. These imitate what makes CLIP's
real vectors harder:

- **Many clusters of very uneven size**: thousands of concepts whose sizes follow a Zipf law, grouped into
  topics (clusters of a topic are related), each cluster with its own spread and its own main axis.
- **Anisotropy**: concepts and spread live in a space whose variance decays as a power law, so a few
  directions dominate (an effective dimension of tens, not 512).
- **The modality gap**: image vectors share one offset direction and text vectors another, so each lies in
  its own cone; random images have cosine ~0.4, and a text query and the images of its concept only ~0.3
  (as for CLIP), while the text query is near no database point.

Everything is a deterministic function of the seed. Images are generated in independent chunks (chunk `c`
from its own random stream), so a million vectors stream through in a few hundred MB, and any chunk can
be regenerated alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retrieval.library import Library
    from retrieval.model.encoder import Encoder
    from retrieval.storage.records import FileMetadata

DIM = 512
CLUSTERS = 4096
TOPICS = 64
ZIPF = 0.9
SPECTRUM_DECAY = 0.8
"""Variance of the i-th concept direction ~ (i + 1) ** -SPECTRUM_DECAY: an effective dimension near 70."""
CHUNK = 16_384
IMAGE_OFFSET = 0.63
"""Weight of the shared image direction in every image vector (the rest, sqrt(1 - w²), is content)."""
TEXT_OFFSET = 0.63
MODALITY_COSINE = 0.25
"""Cosine between the image and the text offset directions: the two cones are far apart."""
TOPIC_WEIGHT = 0.6
"""How much of a cluster's concept is its topic's: clusters of one topic have cosine ~TOPIC_WEIGHT²."""
CLUSTER_SPREAD = 0.72
"""Typical spread of a cluster's images around its concept (its cosine to the concept is ~0.7)."""
TEXT_SPREAD = 2.0
"""Spread of text queries around their concept: far from it (cosine ~0.45), near no image."""
IMAGE_QUERY_NOISE = 0.3
"""Norm of the noise added to a database vector to make an image-like query (cosine ~0.96 to it)."""

_STREAM_SPACE, _STREAM_IMAGES, _STREAM_TEXT, _STREAM_IMAGE_QUERIES = 0, 1, 2, 3


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


class ClipLikeSpace:
    """A fixed space of concepts from which image vectors and text-like queries are drawn (unit rows)."""

    def __init__(
        self,
        dim: int = DIM,
        clusters: int = CLUSTERS,
        *,
        topics: int = TOPICS,
        zipf: float = ZIPF,
        seed: int = 0,
        chunk: int = CHUNK,
    ) -> None:
        if dim < 8 or clusters < 1 or topics < 1 or chunk < 1:
            raise ValueError("`dim` must be >= 8 and `clusters`, `topics`, `chunk` >= 1")
        self.dim, self.clusters, self.seed, self.chunk = dim, clusters, seed, chunk
        rng = np.random.default_rng([seed, _STREAM_SPACE])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self._image_offset = basis[:, 0].astype(np.float32)
        text = MODALITY_COSINE * basis[:, 0] + np.sqrt(1 - MODALITY_COSINE**2) * basis[:, 1]
        self._text_offset = text.astype(np.float32)
        spectrum = (np.arange(dim - 2) + 1.0) ** -SPECTRUM_DECAY
        # concept space: orthogonal to both offsets, scaled so that a noise draw has expected squared norm 1
        self._concept_map = (basis[:, 2:] * np.sqrt(spectrum / spectrum.sum())).T.astype(np.float32)
        topic_centres = self._noise(rng, topics)
        topic_of = rng.integers(0, topics, clusters)
        mixed = TOPIC_WEIGHT * _unit_rows(topic_centres)[topic_of]
        self.concepts = _unit_rows(mixed + np.sqrt(1 - TOPIC_WEIGHT**2) * _unit_rows(self._noise(rng, clusters)))
        self.axes = _unit_rows(self._noise(rng, clusters))
        self.spread = (CLUSTER_SPREAD * np.exp(0.25 * rng.standard_normal(clusters))).astype(np.float32)
        sizes = (np.arange(clusters) + 1.0) ** -zipf
        self.weights = rng.permutation(sizes / sizes.sum())
        """Each cluster's share of the images (and of the text queries)."""

    def _noise(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Anisotropic draws in the concept space (expected squared norm 1)."""
        return rng.standard_normal((count, self.dim - 2), dtype=np.float32) @ self._concept_map

    def _with_offset(self, content: np.ndarray, offset: np.ndarray, weight: float) -> np.ndarray:
        """Unit rows weight*offset + sqrt(1-weight²)*content: content is orthogonal to both offsets."""
        return (weight * offset + np.sqrt(1 - weight**2) * _unit_rows(content)).astype(np.float32)

    # --- images ----------------------------------------------------------------------------------
    def image_chunk(self, number: int, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Chunk `number` of the database: (vectors, cluster of each), `count` rows (default `chunk`)."""
        rng = np.random.default_rng([self.seed, _STREAM_IMAGES, number])
        size = self.chunk if count is None else min(count, self.chunk)
        labels = rng.choice(self.clusters, size=size, p=self.weights)
        along_axis = rng.standard_normal((size, 1), dtype=np.float32) * self.axes[labels]
        content = self.concepts[labels] + self.spread[labels, None] * (self._noise(rng, size) + along_axis)
        return self._with_offset(content, self._image_offset, IMAGE_OFFSET), labels

    def images(self, count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The first `count` database vectors as chunks of (vectors, clusters); every call yields the same."""
        for number, start in enumerate(range(0, count, self.chunk)):
            yield self.image_chunk(number, count - start)

    def image_vectors(self, count: int) -> np.ndarray:
        """The first `count` database vectors in one (count, dim) float32 array."""
        out = np.empty((count, self.dim), dtype=np.float32)
        start = 0
        for vectors, _ in self.images(count):
            out[start : start + len(vectors)] = vectors
            start += len(vectors)
        return out

    # --- queries ---------------------------------------------------------------------------------
    def text_queries(self, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Text-like queries: (vectors, the cluster each is about), drawn by cluster size, in the text
        cone, near their concept's images (cosine ~0.3) but near no database point."""
        rng = np.random.default_rng([self.seed, _STREAM_TEXT, seed])
        labels = rng.choice(self.clusters, size=count, p=self.weights)
        content = self.concepts[labels] + TEXT_SPREAD * self._noise(rng, count)
        return self._with_offset(content, self._text_offset, TEXT_OFFSET), labels

    def image_queries(self, count: int, database_size: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Image-like queries: (vectors, the database position each was made from), each a database vector
        of the first `database_size` plus a little noise; drawn from a few chunks, so cheap at any size."""
        rng = np.random.default_rng([self.seed, _STREAM_IMAGE_QUERIES, seed])
        chunks = -(-database_size // self.chunk)
        picked = np.sort(rng.choice(chunks, size=min(chunks, 4), replace=False))
        positions = np.concatenate(
            [number * self.chunk + np.arange(min(self.chunk, database_size - number * self.chunk)) for number in picked]
        )
        chosen = np.sort(rng.choice(positions, size=count, replace=count > len(positions)))
        vectors = np.empty((count, self.dim), dtype=np.float32)
        for number in picked:
            rows = chosen // self.chunk == number
            chunk, _ = self.image_chunk(int(number), database_size - int(number) * self.chunk)
            vectors[rows] = chunk[chosen[rows] - number * self.chunk]
        noise = rng.standard_normal((count, self.dim), dtype=np.float32)
        noise *= IMAGE_QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        return _unit_rows(vectors + noise), chosen


def fill_library(
    library: Library,
    encoder: Encoder,
    space: ClipLikeSpace,
    images: int,
    meta_of: Callable[[int], FileMetadata],
    progress: Callable[[int], None] | None = None,
) -> float | None:
    """Insert `space`'s first `images` image vectors, the i-th with the facts `meta_of(i)`, through the store's
    bulk writer, one transaction per chunk, resuming after the chunks already committed; the rows per second
    of this call (None when there was nothing left). `progress` gets the rows inserted after each chunk."""
    library.bind_model(encoder)
    key, chunk = encoder.identity.key, space.chunk
    done = library.store.count_vectors()
    if done >= images:
        return None
    started = time.perf_counter()
    for number in range(done // chunk, -(-images // chunk)):
        start = number * chunk
        vectors, _ = space.image_chunk(number, images - start)
        skip = max(0, done - start)  # a chunk is committed whole, so only a foreign partial fill skips rows
        with library.store.writer() as writer:
            metas = [meta_of(position) for position in range(start + skip, start + len(vectors))]
            writer.add_images(metas, vectors[skip:], key)
        if progress:
            progress(start + len(vectors))
    return (images - done) / (time.perf_counter() - started)
