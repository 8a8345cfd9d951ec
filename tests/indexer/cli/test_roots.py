"""`clipsearch roots` and `clipsearch forget` through click, on a real library indexed by `clipsearch index`."""

from __future__ import annotations

import json
from pathlib import Path

from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke
from tests.indexer.cli.test_cli import CPU, model_args


def _library(tmp_path: Path, tiny_config: Path) -> tuple[Path, Path, Path]:
    """Two roots indexed in one run: photos/ (3 PNGs, trip/ with 2) and scans/ (2 PNGs, one truncated JPEG)."""
    photos, scans, library = tmp_path / "photos", tmp_path / "scans", tmp_path / "library"
    for seed in range(3):
        factory.pattern_png(photos / f"p{seed}.png", seed=seed)
    for seed in range(2):
        factory.pattern_png(photos / "trip" / f"t{seed}.png", seed=10 + seed)
        factory.pattern_png(scans / f"s{seed}.png", seed=20 + seed)
    factory.truncated_jpeg(scans / "broken.jpg")
    result = invoke("index", photos, scans, "-q", "--library", library, *model_args(tiny_config))
    assert result.exit_code == 0, result.output
    return photos, scans, library


def _search_paths(library: Path) -> set[str]:
    result = invoke("search", "anything", "--paths", "-k", "50", "--library", library, *CPU)
    assert result.exit_code == 0, result.output
    return set(result.stdout.splitlines())


def test_roots_lists_each_root_with_counts_as_lines_and_json(tmp_path: Path, tiny_config: Path) -> None:
    photos, scans, library = _library(tmp_path, tiny_config)
    lines = invoke("roots", "--library", library)
    assert lines.exit_code == 0, lines.output
    printed = lines.stdout.splitlines()
    assert printed[0].startswith(f"{photos}: 5 images, 0 unreadable, last indexed ")
    assert printed[1].startswith(f"{scans}: 2 images, 1 unreadable, last indexed ")

    listed = json.loads(invoke("roots", "--json", "--library", library).stdout)
    assert [(r["path"], r["images"], r["failed"]) for r in listed["roots"]] == [(str(photos), 5, 0), (str(scans), 2, 1)]
    assert listed["roots"][0]["options"]["include_hidden"] is False and listed["unrooted"] == 0


def test_forget_dry_run_then_forget_a_root(tmp_path: Path, tiny_config: Path) -> None:
    """--dry-run says what would go and keeps it; forget removes the root's images from search and roots."""
    photos, scans, library = _library(tmp_path, tiny_config)
    dry = invoke("forget", scans, "--dry-run", "--library", library)
    assert dry.exit_code == 0, dry.output
    assert (
        dry.stdout == f"would remove 2 images and 1 unreadable files under {scans}; root {scans} no longer recorded\n"
    )
    assert len(_search_paths(library)) == 7

    done = json.loads(invoke("forget", scans, "--json", "--library", library).stdout)
    assert done == {"folder": str(scans), "images": 2, "failed": 1, "roots": [str(scans)], "dry_run": False}
    assert _search_paths(library) == {str(p) for p in photos.rglob("*.png")}
    listed = json.loads(invoke("roots", "--json", "--library", library).stdout)
    assert [r["path"] for r in listed["roots"]] == [str(photos)]


def test_forget_a_subfolder_says_the_root_stays(tmp_path: Path, tiny_config: Path) -> None:
    photos, _scans, library = _library(tmp_path, tiny_config)
    result = invoke("forget", photos / "trip", "--library", library)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed 2 images and 0 unreadable files under {photos / 'trip'}\n"
    assert not any(path.startswith(str(photos / "trip")) for path in _search_paths(library))


def test_forget_a_folder_that_is_no_root_fails_cleanly(tmp_path: Path, tiny_config: Path) -> None:
    photos, _scans, library = _library(tmp_path, tiny_config)
    output = assert_clean_failure(invoke("forget", tmp_path / "nowhere", "--library", library))
    assert f"{tmp_path / 'nowhere'} is not an indexed root" in output and str(photos) in output
    assert len(_search_paths(library)) == 7
