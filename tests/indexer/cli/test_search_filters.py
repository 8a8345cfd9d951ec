"""`search` and `similar` with the filter options, through CliRunner on a real library of JPEGs and PNGs whose
EXIF dates, cameras, sizes and names vary: each filter keeps exactly the files it names."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke

CPU = ["--device", "cpu"]
PHOTOS = {  # name: (taken, make, model, size); PNGs carry no EXIF: their date is their mtime
    "2019/canon_wide.jpg": ("2019:08:01 10:00:00", "Canon", "Canon EOS 80D", (90, 60)),
    "2021/iphone_tall.jpeg": ("2021:06:15 09:00:00", "Apple", "iPhone 12", (40, 80)),
    "2021/iphone_wide.JPG": ("2021:12:31 23:59:59", "Apple", "iPhone 8", (120, 60)),
    "2022/nikon_square.jpg": ("2022:01:01 00:00:00", "NIKON CORPORATION", "NIKON Z 6", (64, 64)),
}
PNGS = {"scans/old.png": datetime(2005, 5, 5, 12), "scans/new.png": datetime(2021, 7, 1, 12)}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> tuple[Path, Path]:
    """(root, library) indexed by the CLI with the tiny model."""
    root = tmp_path_factory.mktemp("filters") / "photos"
    for name, (taken, make, model, size) in PHOTOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        factory.jpeg_with_exif(root / name, taken=taken, make=make, model=model, size=size)
    for seed, (name, modified) in enumerate(PNGS.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        factory.pattern_png(root / name, seed=seed, size=(50, 70))
        os.utime(root / name, (modified.timestamp(), modified.timestamp()))
    library = root.parent / "library"
    result = invoke("index", root, "--library", library, "-q", "--model", tiny_config, "--pretrained", "none", *CPU)
    assert result.exit_code == 0, result.output
    return root, library


def found(library: tuple[Path, Path], *args: str | Path, command: str = "search") -> list[str]:
    """The names (under the root) a query with `args` returns, as `--json` gives them, in rank order."""
    root, folder = library
    # a tiny random-weight model: no relevance cutoff (plumbing, not semantics)
    query = ["anything", "--min-relevance", "0"] if command == "search" else [str(root / "2019" / "canon_wide.jpg")]
    result = invoke(command, *query, "-k", "20", "--json", *args, "--library", folder, *CPU)
    assert result.exit_code == 0, result.output
    return sorted(os.path.relpath(json.loads(line)["path"], root) for line in result.stdout.splitlines())


ALL = sorted([*PHOTOS, *PNGS])
CANON, TALL, WIDE, NIKON = PHOTOS
NEW, OLD = "scans/new.png", "scans/old.png"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ALL),
        (["--after", "2021"], [TALL, WIDE, NIKON, NEW]),
        (["--after", "2021", "--before", "2022"], [TALL, WIDE, NEW]),
        (["--before", "2021-06-15"], [CANON, OLD]),
        (["--after", "2021-12-31T23:59:59", "--before", "2022-01-01T00:00:01"], [WIDE, NIKON]),
        (["--camera", "IPHONE"], [TALL, WIDE]),
        (["--camera", "nikon z"], [NIKON]),
        (["--ext", "jpg"], [CANON, TALL, WIDE, NIKON]),
        (["--ext", "png,jpeg", "--min-width", "60"], [CANON, WIDE, NIKON]),
        (["--ext", ".PNG", "--ext", "heic"], [NEW, OLD]),
        (["--min-height", "70"], [TALL, NEW, OLD]),
        (["--orientation", "landscape"], [CANON, WIDE]),
        (["--orientation", "portrait", "--camera", "apple"], [TALL]),
        (["--orientation", "square"], [NIKON]),
        (["--camera", "leica"], []),
    ],
)
def test_search_keeps_what_each_filter_names(library: tuple[Path, Path], args: list[str], expected: list[str]) -> None:
    assert found(library, *args) == sorted(expected)


def test_in_is_repeatable_and_combines_with_the_other_filters(library: tuple[Path, Path]) -> None:
    root, _ = library
    assert found(library, "--in", root / "2019", "--in", root / "scans") == [CANON, NEW, OLD]
    assert found(library, "--in", root / "2021", "--in", root / "2022", "--before", "2022") == [TALL, WIDE]


def test_similar_takes_the_filters_and_still_leaves_itself_out(library: tuple[Path, Path]) -> None:
    assert found(library, "--before", "2021", command="similar") == [OLD]
    assert found(library, "--camera", "canon", "--include-self", command="similar") == [CANON]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--after", "2021-13"], "--after is '2021-13', which is not a date"),
        (["--before", "last week"], "give 2021, 2021-06, 2021-06-15 or an ISO date and time"),
        (["--after", "2022", "--before", "2021"], "--after (2022-01-01 00:00) is not before --before"),
        (["--camera", ""], "--camera is empty"),
        (["--ext", ","], "--ext must name file extensions"),
    ],
)
def test_bad_filter_values_fail_cleanly_naming_the_flag(
    library: tuple[Path, Path], args: list[str], message: str
) -> None:
    _, folder = library
    output = assert_clean_failure(invoke("search", "x", *args, "--library", folder, *CPU))
    assert message in output and "`" not in output


@pytest.mark.parametrize("args", [["--orientation", "round"], ["--min-width", "0"]])
def test_click_refuses_values_outside_the_choices(library: tuple[Path, Path], args: list[str]) -> None:
    _, folder = library
    assert_clean_failure(invoke("search", "x", *args, "--library", folder, *CPU), code=2)


def test_help_documents_the_date_rule_with_examples() -> None:
    text = invoke("search", "--help").output
    for phrase in ("--after DATE", "2021 = from 2021-01-01 00:00, included", "before 2021-06-01 00:00, excluded"):
        assert phrase in text
    assert "--camera iphone --orientation landscape" in text and "--in ~/Pictures/trips --in" in text
    assert "--after 2020 --before 2021 --camera canon" in invoke("similar", "--help").output


def test_export_takes_the_filters(library: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = library
    target = tmp_path / "out"
    result = invoke("export", "anything", "--camera", "apple", "--orientation", "landscape", "--to", target,
                    "--copy", "--paths", "--min-relevance", "0", "--library", folder, *CPU)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(target)) == ["iphone_wide.JPG"]
