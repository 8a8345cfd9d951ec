"""`--backend` and `--precision int8` through the CLI: where exports go, what is refused, and how it reads."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.config import BACKEND_ENV, ONNX_FOLDER
from tests.clirunner import assert_clean_failure, invoke


def model_args(config: Path) -> list[str]:
    return ["--model", str(config), "--pretrained", "none", "--device", "cpu"]


def test_index_with_int8_exports_into_the_library(tmp_path: Path, tiny_config: Path, photos: Path) -> None:
    """`index --precision int8` (auto backend: ONNX on the CPU) leaves the fp32 towers and the int8 image
    tower in the library's onnx folder, and a later plain `search` works on the library."""
    library = tmp_path / "lib"
    result = invoke("index", photos, "--library", library, *model_args(tiny_config), "--precision", "int8")
    assert result.exit_code == 0, result.output
    (folder,) = (library / ONNX_FOLDER).iterdir()
    assert {"image.onnx", "image-int8.onnx", "text.onnx", "export.json"} <= {p.name for p in folder.iterdir()}
    found = invoke("search", "a red square", "--min-relevance", "0", "--library", library, "--json", "-k", "3")
    assert found.exit_code == 0, found.output
    assert len([json.loads(line) for line in found.stdout.splitlines()]) == 3


def test_the_backend_env_var_picks_torch(tmp_path: Path, tiny_config: Path, photos: Path) -> None:
    """CLIPSEARCH_BACKEND=torch indexes with torch: nothing is exported."""
    library = tmp_path / "lib"
    result = invoke("index", photos, "--library", library, *model_args(tiny_config), env={BACKEND_ENV: "torch"})
    assert result.exit_code == 0, result.output
    assert not (library / ONNX_FOLDER).exists()


def test_int8_with_torch_is_refused_naming_flags(tmp_path: Path, tiny_config: Path, photos: Path) -> None:
    """int8 on the torch backend fails cleanly, naming the flags to change, and creates no library."""
    library = tmp_path / "lib"
    output = assert_clean_failure(
        invoke(
            "index", photos, "--library", library, *model_args(tiny_config), "--backend", "torch", "--precision", "int8"
        )
    )
    assert "--precision int8 runs only on the CPU with the ONNX backend" in output
    assert "--backend torch" in output and "`" not in output
