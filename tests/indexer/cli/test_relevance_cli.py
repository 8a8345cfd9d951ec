"""`--min-relevance` and the relevance shown by `clipsearch search` and `similar`, on a real tiny library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.config import DEFAULT_MIN_RELEVANCE
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("relevance-cli")
    photos = factory.photo_folder(base / "photos", top=5)
    result = invoke("index", photos, "--library", base / "lib", "--model", tiny_config, "--pretrained", "none", *CPU)
    assert result.exit_code == 0, result.output
    return photos, base / "lib"


def _json(*args: str | Path) -> list[dict[str, object]]:
    result = invoke(*args, "--json", *CPU)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_search_json_and_lines_show_the_relevance(library: tuple[Path, Path]) -> None:
    _, lib = library
    found = _json("search", "a red circle", "--min-relevance", "0", "-k", "4", "--library", lib)
    assert len(found) == 4
    values = [hit["relevance"] for hit in found]
    assert all(isinstance(value, float) and 0 <= value <= 1 for value in values)
    assert values == sorted(values, reverse=True)
    lines = invoke("search", "a red circle", "--min-relevance", "0", "-k", "4", "--library", lib, *CPU)
    assert [line.split()[2] for line in lines.stdout.splitlines()] == [f"{value:.2f}" for value in values]


def test_min_relevance_hides_what_is_below_it(library: tuple[Path, Path]) -> None:
    _, lib = library
    everything = _json("search", "a red circle", "--min-relevance", "0", "-k", "20", "--library", lib)
    middle = sorted(hit["relevance"] for hit in everything)[len(everything) // 2]
    cut = _json("search", "a red circle", "--min-relevance", repr(middle), "-k", "20", "--library", lib)
    assert cut == [hit for hit in everything if hit["relevance"] >= middle]
    assert 0 < len(cut) < len(everything) == 8
    assert _json("search", "a red circle", "--min-relevance", "1", "--library", lib) == []
    shown = _json("search", "a red circle", "-k", "20", "--library", lib)  # the default
    assert shown == [hit for hit in everything if hit["relevance"] >= DEFAULT_MIN_RELEVANCE]


@pytest.mark.parametrize("bad", ["2", "-0.5", "nan", "inf"])
def test_a_bad_min_relevance_is_refused_naming_the_flag(library: tuple[Path, Path], bad: str) -> None:
    _, lib = library
    output = assert_clean_failure(invoke("search", "dog", "--min-relevance", bad, "--library", lib, *CPU))
    assert "--min-relevance must be a relevance from 0 (no cutoff) to 1" in output
    assert "min_relevance" not in output.replace("--min-relevance", "")


def test_min_relevance_that_is_not_a_number_is_a_usage_error(library: tuple[Path, Path]) -> None:
    _, lib = library
    output = assert_clean_failure(invoke("search", "dog", "--min-relevance", "high", "--library", lib), code=2)
    assert "--min-relevance" in output


def test_similar_shows_no_relevance(library: tuple[Path, Path]) -> None:
    """Image queries are not calibrated (benchmarks/relevance_cutoff.py): null in JSON, `-` on lines."""
    photos, lib = library
    found = _json("similar", photos / "img00.png", "-k", "3", "--library", lib)
    assert [hit["relevance"] for hit in found] == [None, None, None]
    lines = invoke("similar", photos / "img00.png", "-k", "3", "--library", lib, *CPU).stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["-", "-", "-"]


def test_search_help_shows_the_default_cutoff() -> None:
    result = invoke("search", "--help")
    assert result.exit_code == 0
    assert "--min-relevance" in result.output and str(DEFAULT_MIN_RELEVANCE) in result.output


def test_min_relevance_above_zero_is_refused_for_a_query_with_an_image(library: tuple[Path, Path]) -> None:
    photos, lib = library
    image = photos / "img00.png"
    output = assert_clean_failure(
        invoke("search", "--image", image, "red", "--min-relevance", "0.5", "--library", lib, *CPU), code=2
    )
    assert "--min-relevance is calibrated for text-only queries" in output
    found = _json("search", "--image", image, "red", "--min-relevance", "0", "-k", "3", "--library", lib)
    assert [hit["relevance"] for hit in found] == [None, None, None]
    exported = invoke(
        "export", "--image", image, "--min-relevance", "0.5", "--to", lib.parent / "out", "--library", lib
    )
    assert "--min-relevance is calibrated for text-only queries" in assert_clean_failure(exported, code=2)


def test_a_search_the_cutoff_empties_says_how_to_see_the_closest_matches(library: tuple[Path, Path]) -> None:
    _, lib = library
    hidden = invoke("search", "a red circle", "--min-relevance", "1", "--library", lib, *CPU)
    assert hidden.exit_code == 0 and hidden.stdout == ""
    assert "no results" in hidden.stderr and "--min-relevance 0 shows the closest ones" in hidden.stderr
    shown = invoke("search", "a red circle", "--min-relevance", "0", "--library", lib, *CPU)
    assert "hidden" not in shown.stderr
    as_json = invoke("search", "a red circle", "--min-relevance", "1", "--json", "--library", lib, *CPU)
    assert as_json.stdout == "" and "hidden" not in as_json.stderr  # machine output stays data only
