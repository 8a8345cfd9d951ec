"""Running an exported tower with ONNX Runtime on the CPU: numpy in, L2-normalised float32 vectors out.

Imports neither torch nor open_clip, so a text query on an exported model starts light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np


def onnxruntime_available() -> bool:
    """Whether onnxruntime is installed (found without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxTower:
    """One ONNX file (an image or a text tower) in an onnxruntime session on the CPU. It uses as many threads
    as OMP_NUM_THREADS says when that is set (as torch does), else onnxruntime's default (one per core)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its notes about unused initialisers are not ours to show
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Vectors of one batch: float32 pixels (N, 3, H, W) or int64 token ids (N, context)."""
        dtype = np.int64 if batch.dtype.kind in "iu" else np.float32
        (output,) = self.session.run(None, {self.input: np.ascontiguousarray(batch, dtype=dtype)})
        vectors = np.asarray(output, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
