"""Tests of model.encoder, model.specs, model.weights and model.devices with the real tiny model.

Every model here is a real open_clip model built from a config JSON written by the tests; weights are
seeded random ones or checkpoints saved from them. The full-size model is only used to check that its
offline failure is fast and explains the fix, never downloaded.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

from retrieval.errors import DeviceUnavailableError, InvalidQueryError, ModelUnavailableError
from retrieval.model.devices import mps_available, resolve_device, resolve_precision
from retrieval.model.encoder import Encoder, RandomWeightsWarning
from retrieval.model.specs import ModelSpec
from retrieval.model.weights import _cached_file, _hf_candidates, hub_reachable
from tests import imagefactory
from tests.conftest import TINY_CONFIG

TEXTS = ["a red car", "a dog on the beach", "snowy mountains", "a birthday cake", "city lights at night"]
UNIT_TOLERANCE = 1e-5
EMBED_DIM = cast(int, TINY_CONFIG["embed_dim"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    """Five visually distinct RGB images read back from real PNG files."""
    return imagefactory.pattern_images(tmp_path_factory.mktemp("encoder-images"), 5)


def _write_config(path: Path, config: dict[str, Any] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CONFIG if config is None else config))
    return path


def _unavailable_message(spec: ModelSpec) -> str:
    """The message of the ModelUnavailableError that building an Encoder for `spec` raises."""
    with pytest.raises(ModelUnavailableError) as caught:
        Encoder(spec, device="cpu")
    return str(caught.value)


def _assert_unit_float32(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=UNIT_TOLERANCE)


# --- encoding ------------------------------------------------------------------------------------


def test_image_vectors_are_unit_float32_rows(tiny_encoder: Encoder, images: list[Image.Image]) -> None:
    """encode_images returns one L2-normalised float32 row of the model's embed_dim per image."""
    vectors = tiny_encoder.encode_images(images)
    _assert_unit_float32(vectors, len(images), EMBED_DIM)
    assert tiny_encoder.dim == EMBED_DIM


def test_text_vectors_are_unit_float32_rows(tiny_encoder: Encoder) -> None:
    """encode_texts returns one L2-normalised float32 row of the model's embed_dim per text."""
    _assert_unit_float32(tiny_encoder.encode_texts(TEXTS), len(TEXTS), EMBED_DIM)


def test_empty_batches_give_empty_matrices(tiny_encoder: Encoder) -> None:
    """No texts or pixels give a (0, dim) float32 matrix rather than an error."""
    for vectors in (tiny_encoder.encode_texts([]), tiny_encoder.encode_image_tensors(torch.zeros(0, 3, 32, 32))):
        assert vectors.shape == (0, EMBED_DIM)
        assert vectors.dtype == np.float32


def test_batch_size_does_not_change_vectors(
    tiny_encoder: Encoder, tiny_spec: ModelSpec, images: list[Image.Image]
) -> None:
    """Chunking into batches of 2 (with a ragged last chunk) gives the same vectors as one batch of 8."""
    small = Encoder(tiny_spec, device="cpu", batch_size=2)
    assert tiny_encoder.batch_size == 8
    np.testing.assert_allclose(small.encode_images(images), tiny_encoder.encode_images(images), atol=1e-5)
    np.testing.assert_allclose(small.encode_texts(TEXTS), tiny_encoder.encode_texts(TEXTS), atol=1e-5)


def test_bf16_images_match_fp32(tiny_spec: ModelSpec, images: list[Image.Image]) -> None:
    """Half-precision weights take input of their own dtype (open_clip keeps some parameters in fp32, so
    the first parameter's dtype is the wrong guide): bf16 on the CPU, like fp16 on a GPU, encodes images,
    close to fp32. Before the fix it failed with "Input type (torch.FloatTensor) and weight type ..."."""
    half = Encoder(tiny_spec, device="cpu", backend="torch", precision="bf16").encode_images(images)
    full = Encoder(tiny_spec, device="cpu", backend="torch", precision="fp32").encode_images(images)
    _assert_unit_float32(half, len(images), EMBED_DIM)
    assert float(np.min(np.sum(half * full, axis=1))) > 0.98


def test_distinct_inputs_distinct_vectors_identical_inputs_identical(
    tiny_encoder: Encoder, images: list[Image.Image]
) -> None:
    """Different images (and texts) map to different vectors; the same input maps to the same vector."""
    for vectors in (tiny_encoder.encode_images(images), tiny_encoder.encode_texts(TEXTS)):
        cosine = vectors @ vectors.T
        off_diagonal = cosine[~np.eye(len(vectors), dtype=bool)]
        assert off_diagonal.max() < 1 - 1e-4
    repeated = tiny_encoder.encode_images([images[0], images[1], images[0]])
    np.testing.assert_array_equal(repeated[0], repeated[2])
    texts = tiny_encoder.encode_texts(["a red car", "a red car"])
    np.testing.assert_array_equal(texts[0], texts[1])


def test_random_weights_are_seeded_and_warned(tiny_spec: ModelSpec, images: list[Image.Image]) -> None:
    """Two separate `--pretrained none` encoders build the same model (so a later search process matches the
    index it built), and loading one warns that the weights are random."""
    first, second = Encoder(tiny_spec, device="cpu"), Encoder(tiny_spec, device="cpu")
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        first.load()
    assert first.random_weights
    torch.manual_seed(12345)  # the global RNG state must not matter: the load is seeded on its own
    np.testing.assert_array_equal(first.encode_images(images), second.encode_images(images))
    np.testing.assert_array_equal(first.encode_texts(TEXTS), second.encode_texts(TEXTS))


def test_empty_text_is_an_invalid_query(tiny_encoder: Encoder) -> None:
    """A blank text among others is refused before any encoding."""
    with pytest.raises(InvalidQueryError, match="empty"):
        tiny_encoder.encode_texts(["a cat", "   "])


# --- identity without loading ----------------------------------------------------------------------


def test_dim_and_identity_do_not_load_the_model(tiny_spec: ModelSpec) -> None:
    """Reading `dim` and `identity` leaves the model unloaded. `_model` is private, but it is the only direct
    evidence that no weights were built; the cost of a load is what the lazy design exists to avoid."""
    encoder = Encoder(tiny_spec, device="cpu")
    assert encoder.dim == EMBED_DIM
    assert encoder.identity.weights == "random weights"
    assert encoder._model is None


def test_config_identity_follows_content_not_path(tmp_path: Path) -> None:
    """The same config content at another path, or renamed, is the same model (the name is only a label);
    other content under the same name is not."""
    original = _write_config(tmp_path / "a" / "tiny-test.json")
    same_content = _write_config(tmp_path / "b" / "tiny-test.json")
    renamed = _write_config(tmp_path / "b" / "renamed.json")
    identities = [Encoder(ModelSpec(str(p), "none"), device="cpu").identity for p in (original, same_content, renamed)]
    keys = [identity.key for identity in identities]
    assert keys[0] == keys[1] == keys[2]
    assert identities[2].description == f"renamed.json: {keys[0]}"
    other = _write_config(tmp_path / "c" / "tiny-test.json", {**TINY_CONFIG, "embed_dim": 16})
    changed = Encoder(ModelSpec(str(other), "none"), device="cpu")
    assert changed.identity.key != keys[0]
    assert changed.dim == 16


def test_checkpoint_round_trip_and_identity_by_content(
    tmp_path: Path, tiny_config: Path, tiny_encoder: Encoder, images: list[Image.Image]
) -> None:
    """A saved state_dict loads back as the same model: same vectors, and one identity for the same bytes
    at two paths. Perturbed weights give other vectors and another identity."""
    torch_encoder = Encoder(ModelSpec(str(tiny_config), "none"), device="cpu", backend="torch")
    torch_encoder.load()
    state = torch_encoder._model.state_dict()
    first, second = tmp_path / "one" / "weights.pt", tmp_path / "two" / "weights.pt"
    for path in (first, second):
        path.parent.mkdir()
        torch.save(state, path)  # torch.save records the file's stem inside the archive: keep it equal
    renamed = shutil.copyfile(first, tmp_path / "renamed.pt")
    loaded = Encoder(ModelSpec(str(tiny_config), str(first)), device="cpu")
    for same_bytes in (second, renamed):
        assert loaded.identity == Encoder(ModelSpec(str(tiny_config), str(same_bytes)), device="cpu").identity
    assert loaded.identity.weights.startswith("checkpoint sha256:")
    assert loaded.identity != tiny_encoder.identity
    assert not loaded.random_weights
    np.testing.assert_allclose(loaded.encode_images(images), tiny_encoder.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_texts(TEXTS), tiny_encoder.encode_texts(TEXTS), atol=1e-6)

    perturbed = {key: value.clone() for key, value in state.items()}
    # one row only: a constant added to a whole projection cancels out, as the LayerNorm'd features sum to 0
    perturbed["visual.proj"][0] += 0.1
    perturbed["text_projection"][0] += 0.1
    changed_path = tmp_path / "perturbed.pt"
    torch.save(perturbed, changed_path)
    changed = Encoder(ModelSpec(str(tiny_config), str(changed_path)), device="cpu")
    assert changed.identity != loaded.identity
    assert np.abs(changed.encode_images(images) - loaded.encode_images(images)).max() > 1e-3
    assert np.abs(changed.encode_texts(TEXTS) - loaded.encode_texts(TEXTS)).max() > 1e-3


# --- model errors ----------------------------------------------------------------------------------


def test_unknown_model_name_suggests_close_names() -> None:
    """A misspelt open_clip name is refused with the nearest real names."""
    message = _unavailable_message(ModelSpec("ViT-B-3", "none"))
    assert "unknown open_clip model 'ViT-B-3'" in message
    assert "ViT-B-32" in message


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist is named in the error."""
    missing = tmp_path / "nowhere.json"
    message = _unavailable_message(ModelSpec(str(missing), "none"))
    assert "not found" in message
    assert str(missing) in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps({k: v for k, v in TINY_CONFIG.items() if k != "embed_dim"}), "missing embed_dim"),
        ('{"embed_dim": 32, "vision_cfg": {', "not valid JSON"),
        ("42", "not an open_clip config"),
    ],
    ids=["no-embed-dim", "broken-json", "not-an-object"],
)
def test_bad_config_file(tmp_path: Path, content: str, expected: str) -> None:
    """A config that is not a complete open_clip config JSON object is refused with what is wrong."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert expected in _unavailable_message(ModelSpec(str(path), "none"))


def test_config_model_with_a_tag_asks_for_a_checkpoint(tiny_config: Path) -> None:
    """A config-file model has no pretrained tags: the error says to pass a checkpoint path or none."""
    message = _unavailable_message(ModelSpec(str(tiny_config), "laion2b_s34b_b79k"))
    assert "`pretrained` PATH" in message
    assert "`pretrained` none" in message


def test_unknown_tag_lists_known_tags() -> None:
    """A tag open_clip does not know for the model is refused with the model's real tags."""
    message = _unavailable_message(ModelSpec("ViT-B-32", "no_such_tag"))
    assert "'no_such_tag'" in message
    assert "laion2b_s34b_b79k" in message
    assert "openai" in message


# --- devices and precision -------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_refused(tiny_spec: ModelSpec) -> None:
    """Asking for CUDA where torch sees none fails at construction with the fix."""
    with pytest.raises(DeviceUnavailableError, match="`device` cpu"):
        Encoder(tiny_spec, device="cuda")


def test_fp16_on_cpu_is_refused(tiny_spec: ModelSpec) -> None:
    """Half precision on the CPU is refused rather than run slowly or wrongly."""
    with pytest.raises(DeviceUnavailableError, match="fp16"):
        Encoder(tiny_spec, device="cpu", precision="fp16")


@pytest.mark.parametrize(("device", "precision"), [("tpu", "auto"), ("cpu", "fp8")])
def test_unknown_device_or_precision_is_refused(tiny_spec: ModelSpec, device: str, precision: str) -> None:
    """Values outside the known choices are refused, naming the bad value."""
    with pytest.raises(DeviceUnavailableError, match="unknown"):
        Encoder(tiny_spec, device=device, precision=precision)


@pytest.mark.skipif(torch.cuda.is_available() or mps_available(), reason="this machine has a GPU")
def test_auto_device_is_cpu_here(tiny_spec: ModelSpec) -> None:
    """`auto` falls back to the CPU in fp32 when no GPU exists."""
    assert resolve_device("auto") == "cpu"
    encoder = Encoder(tiny_spec)
    assert (encoder.device, encoder.precision) == ("cpu", "fp32")


def test_auto_precision_per_device() -> None:
    """`auto` precision is fp16 on a GPU and fp32 on the CPU; explicit choices pass through."""
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


# --- pretrained weights offline --------------------------------------------------------------------


@pytest.mark.skipif(constants.HF_HUB_OFFLINE, reason="HF_HUB_OFFLINE is set: no probe is made")
def test_uncached_pretrained_weights_fail_fast_offline(expect_network_attempt: list[str]) -> None:
    """Construction needs no weights; loading uncached weights probes the hub once, fails fast, and says
    what was tried and how to fix it."""
    spec = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    if _cached_file(open_clip.get_pretrained_cfg(spec.model, spec.pretrained), None):
        pytest.skip("the ViT-B-32 weights are cached on this machine")
    encoder = Encoder(spec, device="cpu")
    assert encoder.dim == 512
    assert not expect_network_attempt
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as caught:
        encoder.load()
    assert time.monotonic() - started < 15
    assert expect_network_attempt, "the hub was never probed"
    message = str(caught.value)
    assert "not cached" in message
    assert "cannot be reached" in message
    assert "`pretrained`" in message and "pretrained" in caught.value.parameters
    assert encoder._model is None


def test_hf_candidates_prefer_safetensors() -> None:
    """An hf_hub entry maps to the repo and the file names open_clip would fetch, safetensors first."""
    assert _hf_candidates("org/repo/") == ("org/repo", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
    assert _hf_candidates("org/repo/x.bin") == ("org/repo", ["x.safetensors", "x.bin"])


def test_hub_reachable_blocked_host(expect_network_attempt: list[str]) -> None:
    """A host that cannot be reached reads as offline (after one attempt), not as an exception."""
    assert hub_reachable("https://hub.example.invalid", timeout=1.0) is False
    assert expect_network_attempt


def test_hub_reachable_listening_server() -> None:
    """A host that accepts a TCP connection reads as reachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert hub_reachable(f"http://127.0.0.1:{port}", timeout=2.0) is True
