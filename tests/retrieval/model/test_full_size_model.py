"""The default architecture, ViT-B-32, end to end with seeded random weights (no download here): the
real-size code path (224 px preprocessing, 512-d vectors, the built-in tokenizer) through index and search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer import index_folders
from retrieval import Encoder, Library, ModelSpec, Searcher
from tests import imagefactory as factory


@pytest.mark.slow
def test_vit_b_32_indexes_and_finds_each_image(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    paths = [factory.pattern_png(photos / f"p{seed}.png", seed=seed, size=(320, 240)) for seed in range(4)]
    factory.large_jpeg(photos / "large.jpg")
    encoder = Encoder(ModelSpec("ViT-B-32", "none"), device="cpu", batch_size=4)
    assert encoder.dim == 512
    assert encoder.identity.key == "ViT-B-32 | random weights"
    with Library(tmp_path / "library", create=True) as library:
        report = index_folders(library, encoder, [str(photos)], workers=2)
        assert (report.embedded, report.failed) == (5, 0)
        searcher = Searcher(library, encoder)
        for path in paths:
            top = searcher.search_image(path, k=1, include_self=True)[0]
            assert top.path == str(path) and top.score == pytest.approx(1.0, abs=1e-4)
        texts = encoder.encode_texts(["a dog on the beach at sunset", "a red car"])
        assert texts.shape == (2, 512)
        assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
        assert len(searcher.search_text("a dog on the beach at sunset", k=3, min_relevance=None)) == 3
