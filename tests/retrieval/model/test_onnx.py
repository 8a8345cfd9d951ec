"""The ONNX Runtime backend against torch: the same vectors, exports that are verified, private and rebuilt
when damaged, int8 only where it can run, and the backend chosen as documented.

Models are real: the tiny ViT config (tests/conftest.py) with seeded random weights, and the packaged
reference model, whose image tower is a ModifiedResNet (the architecture whose attention pool needs the
trace-safe twin).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.config import INT8_MIN_COSINE, ONNX_FOLDER
from retrieval.errors import DeviceUnavailableError, OnnxExportError
from retrieval.library import Library
from retrieval.model import onnx_export, onnx_files
from retrieval.model.devices import resolve_backend, resolve_precision
from retrieval.model.encoder import Encoder, OnnxFallbackWarning
from retrieval.model.loading import load_model
from retrieval.model.onnx_files import ExportFolder, StaleExportWarning
from retrieval.model.reference import reference_spec
from retrieval.model.specs import ModelSpec
from tests import imagefactory

TEXTS = ["a red car", "three large blue triangles on a striped background " * 6, "東京の夜景 🐶", "x"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    return imagefactory.pattern_images(tmp_path_factory.mktemp("onnx-images"), 11)


@pytest.fixture(scope="module", params=["tiny", "reference"])
def spec(request: pytest.FixtureRequest, tiny_spec: ModelSpec) -> ModelSpec:
    return tiny_spec if request.param == "tiny" else reference_spec()


@pytest.fixture(scope="module")
def torch_encoder(spec: ModelSpec) -> Encoder:
    return Encoder(spec, device="cpu", backend="torch", batch_size=4)


@pytest.fixture(scope="module")
def onnx_encoder(spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    return Encoder(spec, device="cpu", backend="onnx", batch_size=4, onnx_dir=tmp_path_factory.mktemp("exports"))


def test_onnx_vectors_equal_torch(
    torch_encoder: Encoder, onnx_encoder: Encoder, images: list[Image.Image], one_torch_thread: None
) -> None:
    """Both towers give torch's unit vectors within 1e-5, for batches of 1, of `batch_size` and larger
    (the batch axis is dynamic), on the ViT and on the ModifiedResNet."""
    for count in (1, 4, len(images)):
        np.testing.assert_allclose(
            onnx_encoder.encode_images(images[:count]), torch_encoder.encode_images(images[:count]), atol=TOLERANCE
        )
    for count in (1, len(TEXTS)):
        np.testing.assert_allclose(
            onnx_encoder.encode_texts(TEXTS[:count]), torch_encoder.encode_texts(TEXTS[:count]), atol=TOLERANCE
        )
    assert onnx_encoder.dim == torch_encoder.dim
    assert onnx_encoder.identity == torch_encoder.identity


def test_export_layout_is_private_and_recorded(onnx_encoder: Encoder, images: list[Image.Image]) -> None:
    """One folder per model identity holds both towers, the vocab and the manifest, all 0600 in 0700 folders;
    the manifest names the identity and records each tower's hash and how closely it matched torch."""
    onnx_encoder.encode_images(images[:1])
    assert onnx_encoder.onnx is not None
    folder = onnx_encoder.onnx.folder
    assert folder.path.name == onnx_encoder.identity.short_key
    names = {path.name for path in folder.path.iterdir()}
    assert names == {"image.onnx", "text.onnx", "text.onnx.data", "bpe_simple_vocab_16e6.txt.gz", "export.json"}
    for path in (folder.root, folder.path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in folder.path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    manifest = json.loads(folder.manifest_path.read_text())
    assert (manifest["identity"], manifest["dim"]) == (onnx_encoder.identity.key, onnx_encoder.dim)
    assert manifest["tokenizer"]["kind"] == "clip-bpe"
    for tower in ("image", "text"):
        facts = manifest["towers"][tower]
        assert facts["max_abs_diff"] <= 1e-4 and facts["min_cosine"] >= 0.9999
        assert facts["verify_batch"] != onnx_export.TRACE_BATCH  # a baked-in batch size cannot pass
        assert facts["size"] == folder.tower_path(tower).stat().st_size
        assert facts["mtime_ns"] == folder.tower_path(tower).stat().st_mtime_ns
    weights = manifest["towers"]["text"]["data"]  # the text tower's weights apart from its graph
    assert weights["file"] == "text.onnx.data" and weights["size"] > folder.tower_path("text").stat().st_size


def test_an_unchanged_export_is_not_hashed(
    tiny_spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold query checks the export's files by their recorded size and mtime_ns, without reading them; a file
    touched since (same bytes) is hashed once, accepted, and its new stamp recorded, so the next run reads
    nothing again."""
    first = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
    expected = first.encode_texts(TEXTS)
    assert first.onnx is not None
    folder = first.onnx.folder
    hashed: list[str] = []
    real_hash = onnx_files.file_sha256
    monkeypatch.setattr(onnx_files, "file_sha256", lambda path: hashed.append(Path(path).name) or real_hash(path))

    def query() -> np.ndarray:
        encoder = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
        assert encoder.onnx is not None and encoder.onnx.ready("text")
        return encoder.encode_texts(TEXTS)

    np.testing.assert_allclose(query(), expected, atol=TOLERANCE)
    assert hashed == []
    weights = onnx_files.data_path(folder.tower_path("text"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    np.testing.assert_allclose(query(), expected, atol=TOLERANCE)
    assert hashed == ["text.onnx.data"]
    manifest = json.loads(folder.manifest_path.read_text())
    assert manifest["towers"]["text"]["data"]["mtime_ns"] == weights.stat().st_mtime_ns
    np.testing.assert_allclose(query(), expected, atol=TOLERANCE)
    assert hashed == ["text.onnx.data"]


def test_changed_text_weights_are_exported_again(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """The text tower's weights file is checked like its graph: changed bytes are never used."""
    first = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
    expected = first.encode_texts(TEXTS)
    assert first.onnx is not None
    weights = onnx_files.data_path(first.onnx.folder.tower_path("text"))
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    with pytest.warns(StaleExportWarning, match="text.onnx.data changed since it was verified"):
        again = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path).encode_texts(TEXTS)
    np.testing.assert_allclose(again, expected, atol=TOLERANCE)


def test_a_damaged_export_is_made_again(tiny_spec: ModelSpec, tmp_path: Path, images: list[Image.Image]) -> None:
    """A tower file whose bytes changed is never used: the next encoder warns, exports it again, and gives
    the right vectors. A manifest that is not JSON is treated the same way."""
    first = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path)
    expected = first.encode_images(images[:3])
    assert first.onnx is not None
    image_file = first.onnx.folder.tower_path("image")
    damaged = bytearray(image_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    image_file.write_bytes(bytes(damaged))
    with pytest.warns(StaleExportWarning, match="changed since it was verified"):
        again = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path).encode_images(images[:3])
    np.testing.assert_allclose(again, expected, atol=TOLERANCE)
    first.onnx.folder.manifest_path.write_text("{not json")
    with pytest.warns(StaleExportWarning, match="not valid JSON"):
        texts = Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=tmp_path).encode_texts(TEXTS)
    np.testing.assert_allclose(texts, first.encode_texts(TEXTS), atol=TOLERANCE)


def test_an_export_that_disagrees_with_torch_is_refused(
    tiny_spec: ModelSpec, other_spec: ModelSpec, tmp_path: Path
) -> None:
    """Verification compares the file with the torch model on a fixed batch and raises a typed error
    naming both measures when they differ (here: another model's export)."""
    model = load_model(tiny_spec, warn_random=False).model.eval()
    other = load_model(other_spec, warn_random=False).model.eval()
    target = tmp_path / "other-image.onnx"
    onnx_export.export_tower(other, "image", onnx_export.image_batch(other, 2), target)
    with pytest.raises(OnnxExportError, match="disagrees with torch") as caught:
        onnx_export.verify_tower(
            model, "image", target, onnx_export.image_batch(model, 3), max_abs=1e-4, min_cosine=0.9999
        )
    assert "`backend` torch" in str(caught.value)


def test_the_attention_pool_twin_equals_open_clip(one_torch_thread: None) -> None:
    """The trace-safe attention pool gives open_clip's `AttentionPool2d` output for any batch size."""
    model = load_model(reference_spec()).model.eval()
    pool = model.visual.attnpool
    side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)  # the grid the pool was built for
    for batch in (1, 5):
        shape = (batch, pool.k_proj.in_features, side, side)
        features = torch.randn(*shape, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = pool(features)
            twin = onnx_export._attention_pool(pool, features)
        torch.testing.assert_close(twin, expected, atol=1e-5, rtol=1e-5)


def test_int8_image_tower_stays_close_to_fp32(tmp_path: Path, images: list[Image.Image]) -> None:
    """int8 quantises the image tower only: its vectors keep a cosine of at least INT8_MIN_COSINE to torch's
    fp32 ones on real images, texts are unchanged, and it is cached beside the fp32 export."""
    spec = reference_spec()
    fp32 = Encoder(spec, device="cpu", backend="torch")
    int8 = Encoder(spec, device="cpu", precision="int8", onnx_dir=tmp_path)
    assert (int8.backend, int8.precision) == ("onnx", "int8")
    cosine = (int8.encode_images(images) * fp32.encode_images(images)).sum(axis=1)
    assert cosine.min() >= INT8_MIN_COSINE
    np.testing.assert_allclose(int8.encode_texts(TEXTS), fp32.encode_texts(TEXTS), atol=TOLERANCE)
    assert int8.onnx is not None
    manifest = json.loads(int8.onnx.folder.manifest_path.read_text())
    assert set(manifest["towers"]) == {"image", "text", "image-int8"}
    sizes = [int8.onnx.folder.tower_path(tower).stat().st_size for tower in ("image-int8", "image")]
    assert sizes[0] < sizes[1]


def test_int8_is_refused_where_it_cannot_run(tiny_spec: ModelSpec) -> None:
    """int8 with the torch backend, or on a GPU, is refused naming the parameters to change."""
    with pytest.raises(DeviceUnavailableError, match="int8 runs only on the CPU with the ONNX backend") as caught:
        Encoder(tiny_spec, device="cpu", backend="torch", precision="int8")
    assert {"precision", "backend"} <= set(caught.value.parameters)
    for device in ("cuda", "mps"):
        with pytest.raises(DeviceUnavailableError, match="int8 runs only on the CPU"):
            resolve_precision("int8", device, "torch")


def test_backend_choice(tiny_spec: ModelSpec) -> None:
    """`auto` is ONNX on the CPU (torch for bf16, which ONNX does not run); ONNX refuses a GPU and fp16/bf16;
    an unknown backend is refused."""
    assert resolve_backend("auto", "cpu", "auto") == ("onnx", "cpu")
    assert resolve_backend("auto", "cpu", "bf16") == ("torch", "cpu")
    assert resolve_backend("torch", "cpu", "auto") == ("torch", "cpu")
    with pytest.raises(DeviceUnavailableError, match="fp32 or int8"):
        resolve_precision("bf16", "cpu", "onnx")
    with pytest.raises(DeviceUnavailableError, match="unknown backend"):
        Encoder(tiny_spec, device="cpu", backend="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError):
            resolve_backend("onnx", "cuda", "auto")


def test_a_library_keeps_its_exports(library: Library, tiny_spec: ModelSpec) -> None:
    """A library's encoder exports into the library folder, keyed by the model identity."""
    encoder = library.encoder(tiny_spec, device="cpu")
    encoder.encode_texts(["a red car"])
    assert encoder.onnx is not None
    expected = ExportFolder(library.directory / ONNX_FOLDER, encoder.identity)
    assert encoder.onnx.folder == expected
    assert expected.verified("text") is not None and expected.verified("image") is not None


def test_auto_falls_back_to_torch_when_it_cannot_export(
    tiny_spec: ModelSpec, tmp_path: Path, images: list[Image.Image]
) -> None:
    """An export folder that cannot be written (here: under a file) fails `backend` onnx with a typed error
    naming the fix, while `backend` auto warns once and encodes with torch, giving torch's vectors."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OnnxExportError, match="cannot write the ONNX export"):
        Encoder(tiny_spec, device="cpu", backend="onnx", onnx_dir=blocker / "onnx").encode_texts(TEXTS)
    auto = Encoder(tiny_spec, device="cpu", onnx_dir=blocker / "onnx")
    assert auto.backend == "onnx"
    with pytest.warns(OnnxFallbackWarning, match="runs it with torch instead"):
        vectors = auto.encode_images(images[:3])
    assert (auto.backend, auto.onnx) == ("torch", None)
    expected = Encoder(tiny_spec, device="cpu", backend="torch")
    np.testing.assert_allclose(vectors, expected.encode_images(images[:3]), atol=TOLERANCE)
    np.testing.assert_allclose(auto.encode_texts(TEXTS), expected.encode_texts(TEXTS), atol=TOLERANCE)


def test_an_export_into_a_new_library_keeps_the_library_private(
    tiny_spec: ModelSpec, tmp_path: Path, images: list[Image.Image]
) -> None:
    """The export is a model's first write into a new library (before any row): under umask 022 the library
    folder it creates is 0700, as the store would have made it, not 0755."""
    import os

    previous = os.umask(0o022)
    try:
        with Library(tmp_path / "new-library", create=True) as library:
            library.encoder(tiny_spec, backend="onnx").encode_images(images[:1])
    finally:
        os.umask(previous)
    for folder in (tmp_path / "new-library", tmp_path / "new-library" / ONNX_FOLDER):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
