"""`clipsearch search` and `similar` with fused queries, through CliRunner on a real library indexed with the
tiny model: weighted words (negative ones too, which are not options), `--image`, `--not`, `--not-image`,
`similar IMAGE WORDS`, `--include-self`, `--sort`, and what each is refused with. The CLI must run the same
`Query` as the API: each case compares its JSON output with `Searcher.search` on that query."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from indexer.cli.options import ResultChoice
from indexer.cli.search import QueryChoice
from retrieval.config import NOT_WEIGHT
from retrieval.filters import SearchFilter
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.query import Part, Query
from retrieval.search import Searcher
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke


@pytest.fixture(scope="module")
def photos_library(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> tuple[Path, Path]:
    root = factory.photo_folder(tmp_path_factory.mktemp("fusedcli") / "photos")
    library = root.parent / "library"
    model = ["--model", str(tiny_config), "--pretrained", "none", "--device", "cpu"]
    result = invoke("index", root, "--library", library, "-q", *model)
    assert result.exit_code == 0, result.output
    return root, library


def _ids(output: str) -> list[int]:
    return [json.loads(line)["id"] for line in output.splitlines()]


def _api(library: Path, encoder: Encoder, query: Query) -> list[int]:
    with Library(library) as opened:
        return [result.id for result in Searcher(opened, encoder, gpu="never").search(query)]


def _choice(words: tuple[str, ...] = (), **given: object) -> QueryChoice:
    fields = dict(
        words=words,
        images=(),
        negated=(),
        negated_images=(),
        template=None,
        sort="relevance",
        include_self=False,
        weighted=(),
    )
    return QueryChoice(**(fields | given))  # type: ignore[arg-type]


RESULTS = ResultChoice(k=7, min_score=None, as_json=False, paths_only=False, gpu_index="never")


def test_words_become_the_api_query() -> None:
    """Plain words are one text, weighted words their own parts, --not a part of weight -1, images first;
    `10:30 train` stays plain text; k, sort and the filter pass through."""
    within = SearchFilter.of(within="/photos")
    choice = _choice(("beach", "2:sunset", "10:30", "train"), negated=("people",), images=(Path("r.jpg"),))
    query = choice.query(RESULTS, within)
    assert query.parts == (
        Part(image="r.jpg"),
        Part(text="beach 10:30 train"),
        Part(text="sunset", weight=2.0),
        Part(text="people", weight=NOT_WEIGHT),
    )
    assert (query.k, query.sort, query.filter) == (7, "relevance", within)
    similar = _choice(("at night",), negated_images=(Path("n.jpg"),)).query(RESULTS, within, image=Path("ref.jpg"))
    assert similar.parts == (Part(image="ref.jpg"), Part(text="at night"), Part(image="n.jpg", weight=NOT_WEIGHT))


def test_weighted_words_and_not_match_the_api(photos_library: tuple[Path, Path], tiny_encoder: Encoder) -> None:
    """`2:"red circle" stripes -1:dots --not green` (a negative weight among the words, not an option) gives
    exactly the API's results for the same parts."""
    _root, library = photos_library
    result = invoke(
        "search",
        "2:red circle",
        "stripes",
        "-1:dots",
        "--not",
        "green",
        "--json",
        "-k",
        "6",
        "--library",
        library,
        "--min-relevance",
        "0",
    )
    assert result.exit_code == 0, result.output
    parts = (
        Part(text="stripes"),
        Part(text="red circle", weight=2),
        Part(text="dots", weight=-1),
        Part(text="green", weight=-1),
    )
    assert _ids(result.stdout) == _api(library, tiny_encoder, Query(parts, k=6, min_relevance=None))
    assert _ids(result.stdout) != _api(library, tiny_encoder, Query.of_text("stripes", k=6, min_relevance=None))


def test_a_negative_weight_after_double_dash_and_as_an_option_value(photos_library: tuple[Path, Path]) -> None:
    """After `--` a negative weight is a word as usual; as the value of `--template` it stays that value (here
    a template without {}, refused as such rather than taken as a query part)."""
    _root, library = photos_library
    after = invoke("search", "--json", "--min-relevance", "0", "--library", library, "stripes", "--", "-1:dots")
    direct = invoke("search", "--json", "--min-relevance", "0", "--library", library, "stripes", "-1:dots")
    assert after.exit_code == direct.exit_code == 0, after.output + direct.output
    assert _ids(after.stdout) == _ids(direct.stdout)
    bad_template = invoke("search", "stripes", "--template", "-1:dots", "--library", library)
    assert "has no {} where the query goes" in assert_clean_failure(bad_template)


def test_image_with_words_and_similar_with_words_agree(
    photos_library: tuple[Path, Path], tiny_encoder: Encoder
) -> None:
    """`search --image X "words" --not Y` and `similar X "words" --not Y` are the same query; X itself is left
    out unless --include-self, which brings it back first."""
    root, library = photos_library
    image = root / "img03.png"
    words = ["a red circle", "--not", "dots", "--json", "--library", str(library)]
    searched = invoke("search", "--image", image, *words)
    similar = invoke("similar", image, *words)
    assert searched.exit_code == similar.exit_code == 0, searched.output + similar.output
    assert _ids(searched.stdout) == _ids(similar.stdout)
    parts = (Part(image=str(image)), Part(text="a red circle"), Part(text="dots", weight=-1))
    assert _ids(similar.stdout) == _api(library, tiny_encoder, Query(parts))
    paths = [json.loads(line)["path"] for line in similar.stdout.splitlines()]
    assert str(image) not in paths
    with_self = invoke("similar", image, "--include-self", "--paths", "--library", library)
    assert with_self.exit_code == 0, with_self.output
    assert with_self.stdout.splitlines()[0] == str(image)


def test_not_image_pushes_away_and_leaves_it_out(photos_library: tuple[Path, Path]) -> None:
    """`similar A --not-image B`: B never comes back, and the ranking differs from `similar A`."""
    root, library = photos_library
    a, b = root / "img01.png", root / "img02.png"
    plain = invoke("similar", a, "--paths", "-k", "12", "--library", library)
    pushed = invoke("similar", a, "--not-image", b, "--paths", "-k", "12", "--library", library)
    assert plain.exit_code == pushed.exit_code == 0, plain.output + pushed.output
    assert str(b) in plain.stdout.splitlines()
    assert str(b) not in pushed.stdout.splitlines()
    assert pushed.stdout.splitlines() != [p for p in plain.stdout.splitlines() if p != str(b)]


def test_sort_by_date_prints_the_k_best_oldest_or_newest_first(photos_library: tuple[Path, Path]) -> None:
    """`--sort date` shows the same k results as relevance, by date taken else mtime (the JPEG's EXIF 2021
    date, the PNGs' mtimes of today); `-date` is the reverse for distinct dates; ranks are positions."""
    _root, library = photos_library
    args = ["search", "a photo", "-k", "13", "--json", "--min-relevance", "0", "--library", str(library)]
    best, oldest, newest = (invoke(*args, *sort) for sort in ([], ["--sort", "date"], ["--sort", "-date"]))
    assert best.exit_code == oldest.exit_code == newest.exit_code == 0
    rows = [[json.loads(line) for line in run.stdout.splitlines()] for run in (best, oldest, newest)]
    assert sorted(r["id"] for r in rows[0]) == sorted(r["id"] for r in rows[1]) == sorted(r["id"] for r in rows[2])

    def date(row: dict[str, object]) -> datetime:
        taken = row["taken_at"]
        return (
            datetime.fromisoformat(taken) if isinstance(taken, str) else datetime.fromtimestamp(row["mtime_ns"] / 1e9)
        )  # type: ignore[operator]

    assert [date(r) for r in rows[1]] == sorted(date(r) for r in rows[1])
    assert [date(r) for r in rows[2]] == sorted((date(r) for r in rows[2]), reverse=True)
    assert rows[1][0]["taken_at"] == "2021-07-04T18:30:00"  # the EXIF date is older than every mtime
    assert [r["rank"] for r in rows[1]] == list(range(1, 14))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0:beach"], "W in a W:TEXT word must be a finite number other than 0"),
        (["red", "-1:red"], "cancel each other out"),
        (["beach", "--sort", "newest"], "Invalid value for '--sort'"),
    ],
)
def test_bad_queries_fail_cleanly(photos_library: tuple[Path, Path], args: list[str], message: str) -> None:
    _root, library = photos_library
    result = invoke("search", *args, "--library", library)
    output = assert_clean_failure(result, code=2 if "--sort" in args else 1)
    assert message in output


def test_nothing_to_search_for_is_a_usage_error(tmp_path: Path) -> None:
    """No words and no image: exit 2 before any library is opened."""
    output = assert_clean_failure(invoke("search", "--library", tmp_path / "none"), code=2)
    assert "nothing to search for" in output
    assert not (tmp_path / "none").exists()


def test_a_missing_image_part_names_the_file(photos_library: tuple[Path, Path], tmp_path: Path) -> None:
    _root, library = photos_library
    missing = tmp_path / "nope.png"
    output = assert_clean_failure(invoke("search", "--image", missing, "sunset", "--library", library))
    assert os.fspath(missing) in output
