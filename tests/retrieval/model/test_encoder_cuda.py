"""The encoder and the index pipeline on a CUDA GPU (fp16, the default there), against fp32 on the CPU.

Skipped, with the reason, on a machine whose torch sees no CUDA GPU (CI and the development machines);
`benchmarks/gpu/device_run.sh` runs them on a lent GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.specs import ModelSpec
from tests.libcheck import STORED_ATOL, assert_index_matches_store, reference_vectors, stored_vectors

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False here)"
)

MIN_COSINE_FP16 = 0.995
"""fp16 against fp32 vectors of the same tiny model: rounding moves a unit vector by far less than this."""


def test_auto_on_a_gpu_is_torch_fp16_on_cuda(tiny_spec: ModelSpec) -> None:
    encoder = Encoder(tiny_spec)
    assert (encoder.device, encoder.backend, encoder.precision) == ("cuda", "torch", "fp16")
    encoder.load()
    assert encoder._torch_model().model.visual.conv1.weight.dtype == torch.float16


def test_fp16_cuda_vectors_match_fp32_cpu(tiny_spec: ModelSpec, photos: Path) -> None:
    paths = sorted(str(p) for p in photos.rglob("*.png"))
    gpu = reference_vectors(Encoder(tiny_spec, device="cuda", batch_size=5), paths)
    cpu = reference_vectors(Encoder(tiny_spec, device="cpu", backend="torch", batch_size=5), paths)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    np.testing.assert_allclose(np.linalg.norm(gpu, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(gpu * cpu, axis=1)
    assert cosines.min() >= MIN_COSINE_FP16, cosines


def test_index_run_on_cuda_stores_the_encoders_vectors(tmp_path: Path, tiny_spec: ModelSpec, photos: Path) -> None:
    encoder = Encoder(tiny_spec, device="cuda", batch_size=4)
    with Library(tmp_path / "library", create=True) as library:
        report = index_folders(library, encoder, [str(photos)], workers=4)
        assert report.embedded == report.scanned == 13 and report.failed == 0
        vectors = stored_vectors(library)
        paths = sorted(vectors)
        # fp16 kernels may differ with a batch's make-up, so the vectors agree to fp16 rounding, not bit for bit
        cosines = np.sum(np.stack([vectors[p] for p in paths]) * reference_vectors(encoder, paths), axis=1)
        assert cosines.min() >= 1 - STORED_ATOL, cosines
        assert_index_matches_store(library)
