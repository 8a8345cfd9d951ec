"""`clipsearch duplicates` through CliRunner on a real library: real image files (an original, a half-size
copy and a re-compressed copy of two generated scenes, a distinct third scene, a truncated JPEG) indexed by
`clipsearch index` with the packaged reference model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from retrieval.model.reference import reference_files
from retrieval.quality.scenes import V2, Scene, render
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke

SCENES = [
    Scene("circle", "red", "large", 1, "left", "blue", "plain"),
    Scene("star", "yellow", "small", 3, "top", "black", "striped"),
    Scene("cross", "green", "large", 2, "center", "white", "checkered"),
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, library): scene0 and scene1 with their copies (scene1 in trip/), scene2 alone, broken.jpg."""
    photos = tmp_path_factory.mktemp("dups") / "photos"
    for number, scene in enumerate(SCENES):
        image = render(scene, random.Random(number), 256, V2)
        folder = photos / ("trip" if number == 1 else "") / f"scene{number}"
        folder.mkdir(parents=True)
        image.save(folder / "original.jpg", "JPEG", quality=95)
        if number < 2:
            image.resize((128, 128), Image.Resampling.LANCZOS).save(folder / "half.png")
            image.save(folder / "recompressed.jpg", "JPEG", quality=50)
    factory.truncated_jpeg(photos / "broken.jpg")
    library = photos.parent / "library"
    config, checkpoint = reference_files()
    model = ["--model", config, "--pretrained", checkpoint, "--device", "cpu", "--backend", "torch"]
    result = invoke("index", photos, "--library", library, "-q", *model)
    assert result.exit_code == 0, result.output
    return photos, library


def _files(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in root.rglob("*") if path.is_file()}


def test_groups_print_with_the_best_copy_marked_and_a_summary(indexed: tuple[Path, Path]) -> None:
    photos, library = indexed
    before = _files(photos)
    result = invoke("duplicates", "--library", library)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    copies = [photos / f / name for f in ("scene0", "trip/scene1") for name in ("recompressed.jpg", "half.png")]
    reclaimable = sum(before[path] for path in copies)
    assert lines[0].startswith("group 1: 3 images")
    assert lines[1].startswith(f"  best    {photos / 'scene0' / 'original.jpg'}  (256x256, ")
    assert {line.split()[1] for line in lines[2:4]} == {str(p) for p in copies[:2]}
    assert lines[4].startswith("group 2: 3 images") and str(photos / "trip/scene1/original.jpg") in lines[5]
    assert lines[-1].startswith("2 group(s), 6 images; ") and f"({reclaimable} bytes) reclaimable" in lines[-1]
    assert "nothing was deleted" in lines[-1] and len(lines) == 9
    assert "scene2" not in result.output and "broken" not in result.output
    assert _files(photos) == before  # nothing deleted, nothing changed


def test_json_is_one_object_per_group_and_the_summary_goes_to_stderr(indexed: tuple[Path, Path]) -> None:
    photos, library = indexed
    result = invoke("duplicates", "--library", library, "--json")
    assert result.exit_code == 0, result.output
    groups = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["group"] for g in groups] == [1, 2]
    first = groups[0]
    assert first["best"] == str(photos / "scene0" / "original.jpg") == first["members"][0]["path"]
    assert [m["best"] for m in first["members"]] == [True, False, False] and first["images"] == 3
    assert set(first["members"][0]) == {"id", "path", "score", "size", "width", "height", "taken_at", "best"}
    assert first["reclaimable_bytes"] == sum(m["size"] for m in first["members"][1:])
    assert all(0.9 <= m["score"] <= 1.0 for m in first["members"])
    assert result.stderr.startswith("2 group(s), 6 images")


def test_in_restricts_to_folders(indexed: tuple[Path, Path]) -> None:
    photos, library = indexed
    result = invoke("duplicates", "--library", library, "--json", "--in", photos / "trip")
    assert [json.loads(line)["best"] for line in result.stdout.splitlines()] == [
        str(photos / "trip/scene1/original.jpg")
    ]
    both = invoke("duplicates", "--library", library, "--json", "--in", photos / "trip", "--in", photos / "scene0")
    assert len(both.stdout.splitlines()) == 2


@pytest.mark.parametrize("threshold", ["2", "0.1", "nan"])
def test_a_bad_threshold_is_a_clean_error_naming_the_flag(indexed: tuple[Path, Path], threshold: str) -> None:
    _, library = indexed
    output = assert_clean_failure(invoke("duplicates", "--library", library, "--threshold", threshold))
    assert "--threshold must be a cosine similarity" in output


def test_an_empty_library_has_no_groups_and_a_missing_one_is_a_clean_error(tmp_path: Path, tiny_config: Path) -> None:
    (tmp_path / "empty").mkdir()
    model = ["--model", tiny_config, "--pretrained", "none", "--device", "cpu", "--backend", "torch"]
    assert invoke("index", tmp_path / "empty", "--library", tmp_path / "library", "-q", *model).exit_code == 0
    result = invoke("duplicates", "--library", tmp_path / "library")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0 group(s), 0 images; 0 bytes (0 bytes) reclaimable")
    assert_clean_failure(invoke("duplicates", "--library", tmp_path / "nowhere"))


def test_the_filters_of_search_narrow_the_images_both_sides_of_a_pair_must_pass(indexed: tuple[Path, Path]) -> None:
    """`--ext jpg` leaves the PNG halves out of their groups, `--min-width 200` too; `--ext png` leaves each half
    alone (no group); a bad date is refused naming its flag."""
    _photos, library = indexed
    for narrowing in (["--ext", "jpg"], ["--min-width", "200"]):
        result = invoke("duplicates", "--library", library, "--json", *narrowing)
        assert result.exit_code == 0, result.output
        groups = [json.loads(line) for line in result.stdout.splitlines()]
        members = [{Path(m["path"]).name for m in group["members"]} for group in groups]
        assert members == [{"original.jpg", "recompressed.jpg"}] * 2, narrowing
    alone = invoke("duplicates", "--library", library, "--ext", "png")
    assert alone.exit_code == 0 and alone.output.splitlines()[-1].startswith("0 group(s), 0 images")
    output = assert_clean_failure(invoke("duplicates", "--library", library, "--after", "2021-13"))
    assert "--after" in output
