"""Starting is cheap: help, version, `info` and a text `search` on an exported library import neither torch
nor open_clip, nor SQLAlchemy (a read-only command reads a current SQLite library through the light reader)
nor Pillow, nor numpy.ma (which `np.unique` imports), nor Ray (only `index --ray` imports it).

Each case runs `clipsearch` in a fresh interpreter (the modules a test process already holds say nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.cli import cli
from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.devices import resolve_device
from retrieval.model.encoder import Encoder
from retrieval.model.reference import reference_spec
from tests.clirunner import leaf_commands
from tests.fresh import run_python

pytestmark = pytest.mark.slow  # each test starts a fresh Python process

HEAVY = ("torch", "open_clip", "sqlalchemy", "PIL", "numpy.ma", "ray")
RUN_CLI = f"""
import json, sys
from indexer.cli import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""


def run_cli(*args: str) -> tuple[str, list[str]]:
    """`clipsearch ARGS` in a fresh interpreter: its stdout, and the heavy modules it imported."""
    result = run_python(RUN_CLI, *args)
    outcome = json.loads(result.stderr.splitlines()[-1])
    assert outcome["code"] in (0, None), result.stdout + result.stderr
    return result.stdout, outcome["heavy"]


HELP_CASES = [["--help"], ["--version"]] + [[*path, "--help"] for path in leaf_commands(cli)]


@pytest.mark.parametrize("args", HELP_CASES, ids=" ".join)
def test_help_and_version_import_no_model_code(args: list[str]) -> None:
    """`--help`, `--version` and every `COMMAND --help` print without importing torch or open_clip."""
    output, heavy = run_cli(*args)
    assert output.strip()
    assert heavy == []


def test_info_on_a_real_library_imports_no_model_code(library: Library, tiny_encoder: Encoder, photos: Path) -> None:
    """`info` and `info --json` on an indexed library report its facts without importing torch or open_clip."""
    index_folders(library, tiny_encoder, [str(photos)], workers=1)
    text, heavy = run_cli("info", "--library", str(library.directory))
    assert heavy == []
    assert "     indexed: 13\n" in text
    data, heavy = run_cli("info", "--json", "--library", str(library.directory))
    assert heavy == []
    facts = json.loads(data)
    assert (facts["indexed"], facts["model_identity"]) == (13, tiny_encoder.identity.key)
    assert facts["model_device"] == resolve_device("auto")


def test_a_text_search_on_an_exported_library_imports_no_model_code(library: Library, photos: Path) -> None:
    """After indexing with the ONNX backend (which exports both towers into the library), a cold
    `clipsearch search` imports neither torch nor open_clip, and finds what the torch backend finds."""
    encoder = library.encoder(reference_spec(), device="cpu")
    assert encoder.backend == "onnx"
    index_folders(library, encoder, [str(photos)], workers=1)
    where = ("--library", str(library.directory), "-k", "5", "--json")
    query = "two red circles on a striped background"
    light, heavy = run_cli("search", query, *where)
    assert heavy == []
    assert_same_results(light, run_cli("search", query, *where, "--backend", "torch"))
    inside = photos / "trip"  # `--in`, `--min-score` and `--paths` take the light path too
    paths, heavy = run_cli("search", query, *where[:4], "--in", str(inside), "--min-score", "-1", "--paths")
    assert heavy == []
    assert sorted(paths.splitlines()) == sorted(str(path) for path in inside.iterdir())  # 3 images, k 5


def assert_same_results(light: str, torch_run: tuple[str, list[str]]) -> None:
    output, heavy = torch_run
    assert "torch" in heavy  # the comparison is with a real torch run
    got, expected = ([json.loads(line) for line in text.splitlines()] for text in (light, output))
    assert len(got) == 5
    assert [hit["path"] for hit in got] == [hit["path"] for hit in expected]
    assert [hit["score"] for hit in got] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)
