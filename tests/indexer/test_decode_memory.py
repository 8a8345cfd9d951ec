"""The decoding threads of one run share a memory budget: two large images decode in turn, not together.

Measured as the peak RSS of a fresh child process (VmHWM: ru_maxrss survives exec, so it would start at the
test process's own size) that indexes two 6000 x 6000 RGBA PNGs with two decoding threads, once with a
budget of one image's share and once with room for both. The encoder runs on torch: an ONNX export's own
peak (about 2 GB while tracing) would hide the decoding's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

SIDE = 6000
SHARE = SIDE * SIDE * 4
"""What one image holds in the budget (width x height x 4 bytes): 137 MiB."""

CHILD = """
import json, resource, sys
from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.model.reference import model_file
from retrieval.model.specs import ModelSpec

folder, library, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
encoder = Encoder(ModelSpec(str(model_file("tiny.json")), "none"), device="cpu", backend="torch")
with Library(library, create=True) as opened:
    report = index_folders(opened, encoder, [folder], workers=2, memory_budget=budget)
try:  # this process's own high-water mark: ru_maxrss survives exec, so it starts at the parent's size
    with open("/proc/self/status") as status:
        peak = int(status.read().split("VmHWM:")[1].split()[0]) * 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"embedded": report.embedded, "failed": report.failed, "peak": peak}))
"""


def _large_rgba_png(path: Path, shade: int) -> None:
    ramp = (np.arange(SIDE, dtype=np.uint32) * 255 // SIDE).astype(np.uint8)
    pixels = np.empty((SIDE, SIDE, 4), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2], pixels[..., 3] = ramp[None, :], ramp[:, None], shade, 255
    pixels[SIDE // 3 : SIDE // 2, :, 3] = 128
    Image.fromarray(pixels, "RGBA").save(path, compress_level=1)


def _peak(folder: Path, library: Path, budget: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(library), str(budget)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["embedded"], result["failed"]) == (2, 0)
    return int(result["peak"])


def test_two_large_images_decode_in_turn_within_the_budget(tmp_path: Path) -> None:
    """With room for one image at a time the peak is lower than with room for both, by at least half an
    image's share (decoding one such image takes about twice its share: RGBA pixels and the RGB result)."""
    folder = tmp_path / "large"
    folder.mkdir()
    for shade in (0, 120):
        _large_rgba_png(folder / f"large{shade}.png", shade)
    together = _peak(folder, tmp_path / "together", budget=4 * SHARE)
    in_turn = _peak(folder, tmp_path / "in-turn", budget=SHARE)
    assert in_turn < together - SHARE // 2, (in_turn, together)
