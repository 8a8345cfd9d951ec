"""The Ray stages without a cluster: decode tasks and encode actors called directly on real files give the
rows and vectors a local run stores; where the encode actors go (GPUs when the cluster has them) and what they
run; the two stages are kept apart; and without Ray installed, `--ray` says how to install it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result

from indexer.pipeline import Failed, index_folders
from indexer.ray_index import _record_made_by, import_ray
from indexer.ray_stages import (
    DecodeArgs,
    EncodeActor,
    Encoded,
    EncodePlacement,
    decode_batch,
    decode_remote_args,
    encode_remote_args,
    from_batch,
    place_encoders,
    recipe_for,
    to_batch,
)
from indexer.scan import DiskFile
from retrieval.config import DECODE_MEMORY_BUDGET, ONNX_FOLDER
from retrieval.errors import DeviceUnavailableError, PrecisionMixWarning, RayUnavailableError
from retrieval.library import Library
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke
from tests.fresh import run_python
from tests.libcheck import STORED_ATOL, stored_rows, stored_vectors

CPU = EncodePlacement(actors=1, num_cpus=1, num_gpus=0)
GPU = EncodePlacement(actors=2, num_cpus=1, num_gpus=1)


def _index_on_ray(photos: Path, library: Path, model: Path, address: str) -> Result:
    return invoke("index", photos, "--ray", address, "--library", library, "--model", model, "--pretrained", "none")


def _disk(path: Path) -> DiskFile:
    stat = path.stat()
    return DiskFile(str(path), stat.st_size, stat.st_mtime_ns)


def test_stages_give_the_rows_and_vectors_of_a_local_run(
    library: Library,
    photos: Path,
    tiny_spec,
    one_torch_thread: None,  # type: ignore[no-untyped-def]
) -> None:
    """Every file through `decode_batch` then `EncodeActor` (as Ray runs them, through pickled batches) comes
    out with the facts and, to float16, the vector that a local `index_folders` stores; a broken file and a
    file named with a byte that is not UTF-8 come through too, the broken one failed for the local run's reason."""
    factory.truncated_jpeg(photos / "broken.jpg")
    factory.pattern_png(photos / os.fsdecode(b"n\xffame.png"), seed=99)
    encoder = library.encoder(tiny_spec, device="cpu", batch_size=8)
    index_folders(library, encoder, [str(photos)], workers=1)
    files = [_disk(path) for path in sorted(photos.rglob("*")) if path.is_file()]

    args = DecodeArgs(encoder.image_transform, follow_symlinks=False, memory_budget=DECODE_MEMORY_BUDGET)
    actor = EncodeActor(recipe_for(encoder, CPU, "auto", library.directory / ONNX_FOLDER))
    decoded = decode_batch(to_batch(files), args)
    out = from_batch(actor(decoded))

    assert [item.meta.path if isinstance(item, Encoded) else item.disk.path for item in out] == [f.path for f in files]
    rows, vectors = stored_rows(library), stored_vectors(library)
    failed = [item for item in out if isinstance(item, Failed)]
    assert [(item.disk.path, item.reason) for item in failed] == [
        (path, row["error"]) for path, row in rows.items() if row["error"]
    ]
    assert [item.disk.path for item in failed] == [str(photos / "broken.jpg")]
    for item in out:
        if isinstance(item, Encoded):
            row = rows[item.meta.path]
            assert (item.meta.content_hash, item.meta.width, item.meta.height) == (
                row["content_hash"],
                row["width"],
                row["height"],
            )
            np.testing.assert_allclose(item.vector, vectors[item.meta.path], rtol=0, atol=STORED_ATOL)


def test_encode_actors_take_a_gpu_each_where_the_cluster_has_gpus() -> None:
    """One actor per GPU holding one; CPU actors (one per RAY_CPUS_PER_ENCODE_ACTOR CPUs) otherwise, or when
    `device` cpu says so; `device` cuda on a cluster without GPUs is refused, naming `device`."""
    gpus = place_encoders({"CPU": 64, "GPU": 8}, "auto")
    assert (gpus.actors, gpus.num_gpus, gpus.num_cpus, gpus.device) == (8, 1, 1, "cuda")
    assert place_encoders({"CPU": 64, "GPU": 8}, "cuda").device == "cuda"
    assert place_encoders({"CPU": 64, "GPU": 8}, "cpu") == EncodePlacement(actors=16, num_cpus=1, num_gpus=0)
    assert place_encoders({"CPU": 3}, "auto") == EncodePlacement(actors=1, num_cpus=1, num_gpus=0)
    assert place_encoders({"CPU": 64, "GPU": 8}, "auto", actors=3).actors == 3
    with pytest.raises(DeviceUnavailableError, match="`device` cuda") as refused:
        place_encoders({"CPU": 8}, "cuda")
    assert refused.value.parameters == ("device",)
    with pytest.raises(DeviceUnavailableError, match="`device` mps"):
        place_encoders({"CPU": 8}, "mps")
    assert encode_remote_args(gpus) == {"num_cpus": 1, "num_gpus": 1}


def test_gpu_actors_run_torch_on_cuda_and_cpu_actors_run_the_drivers_runtime(library: Library, tiny_spec) -> None:  # type: ignore[no-untyped-def]
    """CPU actors build the driver's encoder (backend and precision), so their vectors are a local run's; GPU
    actors run torch on cuda at `precision` (auto: fp16; int8, ONNX on the CPU only, becomes fp16)."""
    encoder = library.encoder(tiny_spec, device="cpu", backend="onnx", precision="int8")
    onnx = library.directory / ONNX_FOLDER
    on_cpu = recipe_for(encoder, CPU, "int8", onnx)
    assert (on_cpu.device, on_cpu.backend, on_cpu.precision, on_cpu.made_by) == ("cpu", "onnx", "int8", "onnx int8")
    assert (on_cpu.spec, on_cpu.identity, on_cpu.batch_size, on_cpu.onnx_dir) == (
        encoder.spec,
        encoder.identity,
        encoder.batch_size,
        str(onnx),
    )
    assert recipe_for(encoder, GPU, "int8", onnx).made_by == "torch fp16"
    assert recipe_for(encoder, GPU, "auto", onnx).made_by == "torch fp16"
    assert recipe_for(encoder, GPU, "fp32", onnx).made_by == "torch fp32"
    assert recipe_for(encoder, GPU, "bf16", onnx).device == "cuda"


def test_a_run_on_gpu_actors_records_their_precision(library: Library, tiny_spec) -> None:  # type: ignore[no-untyped-def]
    """The library records what made the vectors: the GPU actors' `torch fp16`, not the CPU driver's runtime."""
    encoder = library.encoder(tiny_spec, device="cpu", backend="torch")
    library.bind_model(encoder)
    _record_made_by(library, encoder, recipe_for(encoder, GPU, "auto", library.directory / ONNX_FOLDER))
    assert library.precision() == "torch fp16"
    with pytest.warns(PrecisionMixWarning, match="torch fp32"):
        _record_made_by(library, encoder, recipe_for(encoder, CPU, "auto", library.directory / ONNX_FOLDER))
    assert library.precision() == "torch fp16, torch fp32"


def test_decode_tasks_are_not_fused_into_the_encode_actors() -> None:
    """Ray Data fuses a task stage into the following actor stage when their remote arguments are compatible;
    the decode tasks' arguments never are, on CPU or GPU actors (while the same arguments would be)."""
    fusion = pytest.importorskip("ray.data._internal.logical.rules.operator_fusion")
    decode = decode_remote_args(DECODE_MEMORY_BUDGET)
    for placement in (CPU, GPU):
        assert not fusion.are_remote_args_compatible(decode, encode_remote_args(placement))
    assert fusion.are_remote_args_compatible(encode_remote_args(CPU), encode_remote_args(CPU))


def test_without_ray_installed_ray_runs_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, photos: Path, tiny_config: Path
) -> None:
    """With Ray missing, `import_ray` and `clipsearch index --ray auto` fail with one clear message naming
    `pip install 'clipsearch[ray]'`, and no library is left half made."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray imports
    with pytest.raises(RayUnavailableError, match=r"pip install 'clipsearch\[ray\]'"):
        import_ray()
    result = _index_on_ray(photos, tmp_path / "lib", tiny_config, "auto")
    output = assert_clean_failure(result)
    assert "pip install 'clipsearch[ray]'" in output
    assert not (tmp_path / "lib").exists()


def test_an_address_ray_cannot_use_is_a_clear_error_naming_it(tmp_path: Path, photos: Path, tiny_config: Path) -> None:
    """An address that is not `auto` or host:port is refused before anything is indexed, naming `ray_address`
    (`--ray` on the command line)."""
    pytest.importorskip("ray")
    result = _index_on_ray(photos, tmp_path / "lib", tiny_config, "no-port")
    output = assert_clean_failure(result)
    assert "cannot connect to the Ray cluster at --ray no-port" in output


@pytest.mark.slow  # a fresh interpreter
def test_a_local_index_run_imports_no_ray(tmp_path: Path, photos: Path, tiny_config: Path) -> None:
    """Without `--ray`, a whole `clipsearch index` run leaves Ray unimported (as `--help` does, test_startup)."""
    code = (
        "import sys; from indexer.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('ray imported' if 'ray' in sys.modules else 'no ray', 'indexed' if 'torch' in sys.modules else '')"
    )
    options = ["--library", str(tmp_path / "lib"), "--model", str(tiny_config), "--pretrained", "none", "--json"]
    result = run_python(code, "index", str(photos), *options)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no ray indexed"
