"""`clipsearch export` through CliRunner on a real library indexed with the tiny model: the query's results
(with search's options: weights, --image, --in, -k) written as links or copies, re-runs adding nothing,
`--json`, and a folder that is a file refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke


@pytest.fixture(scope="module")
def photos_library(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> tuple[Path, Path]:
    """Photos with two img00.png (the top one and trip/img00.png, other pixels), indexed."""
    root = factory.photo_folder(tmp_path_factory.mktemp("export") / "photos")
    factory.pattern_png(root / "trip" / "img00.png", seed=40)
    library = root.parent / "library"
    model = ["--model", str(tiny_config), "--pretrained", "none", "--device", "cpu"]
    result = invoke("index", root, "--library", library, "-q", *model)
    assert result.exit_code == 0, result.output
    return root, library


def _searched(library: Path, *query: str | Path) -> list[str]:
    result = invoke("search", *query, "--paths", "--library", library)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_export_links_exactly_the_search_results(photos_library: tuple[Path, Path], tmp_path: Path) -> None:
    """`export` with weights, --not and -k links exactly what `search` with the same words finds, under
    their names; a second run writes nothing new."""
    _root, library = photos_library
    query = ["2:a red circle", "stripes", "-1:dots", "--not", "green", "-k", "5"]
    out = tmp_path / "out"
    result = invoke("export", *query, "--to", out, "--library", library)
    assert result.exit_code == 0, result.output
    found = _searched(library, *query)
    assert sorted(os.readlink(out / name) for name in os.listdir(out)) == sorted(found)
    assert "5 written, 0 already there, 0 missing" in result.stderr
    again = invoke("export", *query, "--to", out, "--library", library, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["written"], report["already there"], report["mode"]) == (0, 5, "link")
    assert len(os.listdir(out)) == 5


def test_export_copies_with_filters_and_an_image_part(photos_library: tuple[Path, Path], tmp_path: Path) -> None:
    """`--copy --in trip --image X`: copies of the trip/ results only (X left out), with search's `--in`."""
    root, library = photos_library
    query = ["--image", root / "img00.png", "--in", root / "trip", "-k", "10"]
    out = tmp_path / "copies"
    result = invoke("export", *query, "--to", out, "--copy", "--paths", "--library", library)
    assert result.exit_code == 0, result.output
    found = _searched(library, *query)
    assert len(found) == 4 and all(path.startswith(str(root / "trip") + os.sep) for path in found)
    written = result.stdout.splitlines()
    assert sorted(os.path.basename(path) for path in written) == sorted(os.listdir(out))
    assert sorted(Path(path).read_bytes() for path in written) == sorted(Path(path).read_bytes() for path in found)
    assert not any(Path(path).is_symlink() for path in written)


def test_clashing_names_are_numbered(photos_library: tuple[Path, Path], tmp_path: Path) -> None:
    """The two img00.png of the library both arrive: `img00.png` and `img00 (2).png`."""
    root, library = photos_library
    out = tmp_path / "all"
    result = invoke("export", "anything", "-k", "100", "--to", out, "--library", library)
    assert result.exit_code == 0, result.output
    names = os.listdir(out)
    assert len(names) == 14 and {"img00.png", "img00 (2).png"} <= set(names)
    assert {os.readlink(out / "img00.png"), os.readlink(out / "img00 (2).png")} == {
        str(root / "img00.png"),
        str(root / "trip" / "img00.png"),
    }


def test_a_folder_that_is_a_file_is_a_usage_error(photos_library: tuple[Path, Path], tmp_path: Path) -> None:
    _root, library = photos_library
    taken = tmp_path / "taken"
    taken.write_text("mine")
    output = assert_clean_failure(invoke("export", "dog", "--to", taken, "--library", library), code=2)
    assert "--to" in output and "is a file" in output
    assert taken.read_text() == "mine"
