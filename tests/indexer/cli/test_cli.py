"""Tests of the `clipsearch` command line through click's CliRunner: the full group, real libraries.

One library is indexed once per module (with the tiny random-weight model) and shared by the read-only
tests; scores printed by the CLI are checked against an exact numpy reference over the stored vectors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import numpy as np
import open_clip
import pytest
from click.testing import Result
from huggingface_hub import try_to_load_from_cache
from sqlalchemy import make_url

from indexer.cli import cli
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.storage.records import ImageRecord
from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke
from tests.conftest import TINY_CONFIG

CPU = ["--device", "cpu"]
HUMAN_LINE = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d{4})\s+(\S+)\s+\((\d+x\d+|\?)(?:, (\d{4}-\d\d-\d\d))?\)$")


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@dataclass
class Indexed:
    """The module's library: where it is, its two index runs, and its rows and vectors for reference."""

    root: Path
    library: Path
    first: Result
    rerun: Result
    identity: str
    ids: np.ndarray
    vectors: np.ndarray
    rows: dict[str, ImageRecord]

    def ranking(self, query: np.ndarray, under: Path | None = None) -> list[tuple[str, float]]:
        """Every (path, exact cosine) best first, optionally only under `under`."""
        by_id = {r.id: r.path for r in self.rows.values()}
        pairs = [(by_id[int(i)], float(s)) for i, s in zip(self.ids, self.vectors @ query, strict=True)]
        if under is not None:
            pairs = [pair for pair in pairs if pair[0].startswith(str(under) + os.sep)]
        return sorted(pairs, key=lambda pair: -pair[1])


def model_args(config: Path) -> list[str]:
    return ["--model", str(config), "--pretrained", "none", *CPU]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Indexed:
    """Six PNGs, trip/ with two PNGs and an EXIF JPEG, and one truncated JPEG; indexed, then re-run."""
    base = tmp_path_factory.mktemp("cli")
    root = base / "photos"
    for seed in range(6):
        factory.pattern_png(root / f"img{seed:02d}.png", seed=seed)
    for seed in (10, 11):
        factory.pattern_png(root / "trip" / f"img{seed:02d}.png", seed=seed)
    factory.jpeg_with_exif(root / "trip" / "camera.jpg", orientation=6)
    factory.truncated_jpeg(root / "broken.jpg")
    library = base / "library"
    first = invoke("index", root, "--library", library, *model_args(tiny_config))
    rerun = invoke("index", root, "--library", library, *model_args(tiny_config))
    assert first.exit_code == 0 and rerun.exit_code == 0, first.output + rerun.output
    with Library(library) as opened:
        identity = opened.recorded_identity()
        dim = opened.dim()
        assert identity is not None and dim is not None
        with opened.store.vector_snapshot(dim) as (_generation, batches):
            parts = list(batches)
        ids = np.concatenate([p[0] for p in parts])
        rows = {r.path: r for r in opened.store.rows_by_ids(ids.tolist()).values()}
    return Indexed(root, library.resolve(), first, rerun, identity, ids, np.concatenate([p[1] for p in parts]), rows)


def text_vector(encoder: Encoder, text: str) -> np.ndarray:
    return encoder.encode_texts([text])[0]


# --- index -------------------------------------------------------------------------------------


def test_index_summary_counts_and_skipped_file(indexed: Indexed) -> None:
    """The first run reports what it found, embedded and skipped, and names the broken file on stderr."""
    summary = indexed.first.stdout
    assert f"indexed {indexed.root}: 10 images found, 9 embedded" in summary
    assert "1 skipped as unreadable" in summary
    assert f"skipped {indexed.root / 'broken.jpg'}: " in indexed.first.stderr
    assert "RANDOM weights (--pretrained none)" in indexed.first.stderr  # the edge names the flag


def test_index_rerun_embeds_nothing(indexed: Indexed) -> None:
    """A second run over unchanged files embeds nothing and counts them all unchanged."""
    assert "10 images found, 0 embedded" in indexed.rerun.stdout
    assert "10 unchanged" in indexed.rerun.stdout


def test_index_json_with_exclude_and_quiet(indexed: Indexed, tiny_config: Path, tmp_path: Path) -> None:
    """`--json` prints one parseable object; `--exclude` leaves out a folder and a glob; `--quiet` is accepted."""
    result = invoke(
        "index", indexed.root, "--library", tmp_path / "lib", "--exclude", "trip", "--exclude", "img0[45].png",
        "--json", "--quiet", *model_args(tiny_config),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["scanned"], report["embedded"], report["failed"]) == (5, 4, 1)
    assert report["failures"][0][0] == str(indexed.root / "broken.jpg")
    assert report["roots"] == [str(indexed.root)]
    listed = invoke("search", "anything", "--paths", "-k", "50", "--library", tmp_path / "lib", *CPU)
    assert sorted(listed.stdout.splitlines()) == [str(indexed.root / f"img0{n}.png") for n in range(4)]


def test_index_short_quiet_flag_prints_summary(tiny_config: Path, tmp_path: Path) -> None:
    """`-q` only turns off progress: the summary line is still printed."""
    factory.pattern_png(tmp_path / "one" / "a.png", seed=1)
    result = invoke("index", tmp_path / "one", "-q", "--library", tmp_path / "lib", *model_args(tiny_config))
    assert result.exit_code == 0, result.output
    assert "1 images found, 1 embedded" in result.stdout


def test_broken_file_is_listed_by_info(indexed: Indexed) -> None:
    """`info` shows the failure count and the skipped file with its reason."""
    result = invoke("info", "--library", indexed.library)
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s+failed: 1$", result.stdout, re.M)
    assert re.search(r"^\s+indexed: 9$", result.stdout, re.M)
    assert re.search(rf"^\s+skipped: {re.escape(str(indexed.root / 'broken.jpg'))}: \S", result.stdout, re.M)


def test_index_missing_root_fails_clearly(tmp_path: Path, tiny_config: Path) -> None:
    """A root that does not exist: exit 1 naming it, no traceback."""
    result = invoke("index", tmp_path / "nowhere", "--library", tmp_path / "lib", *model_args(tiny_config))
    output = assert_clean_failure(result)
    assert "nowhere" in output and "does not exist" in output
    assert not (tmp_path / "lib").exists(), "a failed index run must not leave an empty library behind"


def test_misspelled_option_suggests_the_right_one(tmp_path: Path) -> None:
    """A usage error exits 2 and click suggests the option meant."""
    result = invoke("index", tmp_path, "--modle", "tiny.json")
    output = assert_clean_failure(result, code=2)
    assert "--modle" in output and "Did you mean '--model'?" in output


# --- search ------------------------------------------------------------------------------------


def test_search_human_output_uses_the_library_model(indexed: Indexed, tiny_encoder: Encoder, tiny_config: Path) -> None:
    """A multi-word query without quotes, no --model: rank, score and path lines equal to the exact
    ranking of the library's own (tiny) model."""
    result = invoke("search", "a", "red", "circle", "--library", indexed.library, *CPU)
    assert result.exit_code == 0, result.output
    assert str(tiny_config.resolve()) in result.stderr  # the random-weights warning names the model
    lines = result.stdout.splitlines()
    expected = indexed.ranking(text_vector(tiny_encoder, "a red circle"))
    assert len(lines) == len(expected) == 9
    for rank, (line, (path, score)) in enumerate(zip(lines, expected, strict=True), start=1):
        match = HUMAN_LINE.match(line)
        assert match, line
        assert (int(match[1]), match[3]) == (rank, path)
        assert float(match[2]) == pytest.approx(score, abs=1e-4)
        row = indexed.rows[path]
        assert match[4] == f"{row.width}x{row.height}"
        assert match[5] == (f"{row.taken_at:%Y-%m-%d}" if row.taken_at else None)


def test_search_with_the_same_model_named_gives_the_same_output(indexed: Indexed, tiny_config: Path) -> None:
    """Naming the library's own model explicitly changes nothing."""
    implicit = invoke("search", "dog", "--json", "--library", indexed.library, *CPU)
    explicit = invoke("search", "dog", "--json", "--library", indexed.library, *model_args(tiny_config))
    assert implicit.exit_code == explicit.exit_code == 0
    assert implicit.stdout == explicit.stdout


def test_search_json_fields_and_k(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """`--json -k 3`: three objects with rank, path, score and the row's size and date facts."""
    results = json_lines(invoke("search", "dog", "--json", "-k", "3", "--library", indexed.library, *CPU))
    expected = indexed.ranking(text_vector(tiny_encoder, "dog"))[:3]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert [r["path"] for r in results] == [path for path, _ in expected]
    np.testing.assert_allclose([r["score"] for r in results], [score for _, score in expected], atol=1e-5)
    for result in results:
        row = indexed.rows[result["path"]]
        assert (result["width"], result["height"], result["size"]) == (row.width, row.height, row.size)
        assert result["taken_at"] == (row.taken_at.isoformat() if row.taken_at else None)


def test_search_paths_within_folder(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """`--paths --in trip -k 2`: only paths, only from trip/, in exact order."""
    trip = indexed.root / "trip"
    result = invoke("search", "dog", "--paths", "--in", trip, "-k", "2", "--library", indexed.library, *CPU)
    assert result.exit_code == 0, result.output
    expected = indexed.ranking(text_vector(tiny_encoder, "dog"), under=trip)[:2]
    assert result.stdout.splitlines() == [path for path, _ in expected]


def test_search_min_score(indexed: Indexed, tiny_encoder: Encoder) -> None:
    """`--min-score` halfway between the 3rd and 4th exact scores keeps exactly the top three."""
    expected = indexed.ranking(text_vector(tiny_encoder, "a cat"))
    threshold = (expected[2][1] + expected[3][1]) / 2
    results = json_lines(
        invoke("search", "a", "cat", "--json", "--min-score", repr(threshold), "--library", indexed.library, *CPU)
    )
    assert [r["path"] for r in results] == [path for path, _ in expected[:3]]


def test_search_template(indexed: Indexed) -> None:
    """`--template "a photo of {}" dog` prints exactly what the literal query prints; a template
    without {} is refused."""
    templated = invoke("search", "dog", "--template", "a photo of {}", "--json", "--library", indexed.library, *CPU)
    literal = invoke("search", "a photo of dog", "--json", "--library", indexed.library, *CPU)
    plain = invoke("search", "dog", "--json", "--library", indexed.library, *CPU)
    assert templated.exit_code == literal.exit_code == 0
    assert templated.stdout == literal.stdout != plain.stdout
    bad = invoke("search", "dog", "--template", "a photo", "--library", indexed.library, *CPU)
    assert "has no {}" in assert_clean_failure(bad)


def test_search_with_another_model_is_refused(indexed: Indexed, tmp_path: Path) -> None:
    """A different --model: exit 1, and the message names both the library's model and the new one."""
    other = tmp_path / "other-model.json"
    other.write_text(json.dumps(TINY_CONFIG | {"embed_dim": 16}))
    result = invoke("search", "dog", "--library", indexed.library, *model_args(other))
    output = assert_clean_failure(result)
    assert indexed.identity in output
    assert "other-model.json: config sha256:" in output


@pytest.mark.parametrize("query", ["  ", ""])
def test_search_empty_query_fails(indexed: Indexed, query: str) -> None:
    """A blank query is refused with exit 1."""
    output = assert_clean_failure(invoke("search", query, "--library", indexed.library, *CPU))
    assert "empty" in output


def test_search_library_without_images_fails(tiny_config: Path, tmp_path: Path) -> None:
    """Indexing an empty folder records the model; searching it then says there are no indexed images."""
    (tmp_path / "empty").mkdir()
    indexed_empty = invoke("index", tmp_path / "empty", "-q", "--library", tmp_path / "lib", *model_args(tiny_config))
    assert indexed_empty.exit_code == 0, indexed_empty.output
    assert "0 images found" in indexed_empty.stdout
    output = assert_clean_failure(invoke("search", "dog", "--library", tmp_path / "lib", *CPU))
    assert "no indexed images" in output


# --- similar -----------------------------------------------------------------------------------


def test_similar_leaves_itself_out_unless_asked(indexed: Indexed) -> None:
    """An indexed query image is absent from its own results; `--include-self` ranks it first at ~1."""
    query = str(indexed.root / "img00.png")
    results = json_lines(invoke("similar", query, "--json", "-k", "50", "--library", indexed.library, *CPU))
    assert query not in {r["path"] for r in results}
    assert len(results) == 8
    own_vector = indexed.vectors[indexed.ids == indexed.rows[query].id][0]
    expected = [pair for pair in indexed.ranking(own_vector) if pair[0] != query]
    assert [r["path"] for r in results] == [path for path, _ in expected]
    with_self = json_lines(
        invoke("similar", query, "--include-self", "--json", "-k", "2", "--library", indexed.library, *CPU)
    )
    assert with_self[0]["path"] == query
    assert with_self[0]["score"] == pytest.approx(1.0, abs=1e-3)  # its float16-stored vector with itself
    assert with_self[1]["path"] == expected[0][0]


def test_similar_result_carries_exif_facts(indexed: Indexed) -> None:
    """The EXIF JPEG's JSON result carries its rotated size and its capture date."""
    query = str(indexed.root / "trip" / "camera.jpg")
    results = json_lines(invoke("similar", query, "--include-self", "-k", "1", "--json", "--library", indexed.library))
    assert (results[0]["path"], results[0]["width"], results[0]["height"]) == (query, 40, 80)
    assert results[0]["taken_at"] == "2021-07-04T18:30:00"


def test_similar_unindexed_image_file(indexed: Indexed, tmp_path: Path) -> None:
    """A copy outside the library is encoded and finds its original first, at ~1."""
    original = indexed.root / "trip" / "img11.png"
    copy = shutil.copy(original, tmp_path / "copy.png")
    results = json_lines(invoke("similar", copy, "--json", "-k", "3", "--library", indexed.library, *CPU))
    assert results[0]["path"] == str(original)
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(results) == 3


def test_similar_unreadable_image_fails_clearly(indexed: Indexed, tmp_path: Path) -> None:
    """A text file named .jpg and the indexed broken JPEG: exit 1 with the path, no traceback."""
    for image in (factory.text_as_image(tmp_path / "fake.jpg"), indexed.root / "broken.jpg"):
        output = assert_clean_failure(invoke("similar", image, "--library", indexed.library, *CPU))
        assert str(image) in output


def test_similar_missing_image_fails_clearly(indexed: Indexed, tmp_path: Path) -> None:
    """A path that does not exist: a clean failure naming it."""
    missing = tmp_path / "missing.png"
    result = invoke("similar", missing, "--library", indexed.library, *CPU)
    assert result.exit_code in (1, 2)
    output = assert_clean_failure(result, code=result.exit_code)
    assert str(missing) in output or "missing.png" in output


# --- info --------------------------------------------------------------------------------------


def test_info_json_via_environment(indexed: Indexed, tiny_config: Path) -> None:
    """`info --json` with CLIPSEARCH_LIBRARY: the library's facts as one object."""
    result = invoke("info", "--json", env={"CLIPSEARCH_LIBRARY": str(indexed.library)})
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["library"] == str(indexed.library)
    assert (facts["model_identity"], facts["dim"]) == (indexed.identity, TINY_CONFIG["embed_dim"])
    assert facts["model"] == f"{tiny_config.name}: {indexed.identity}"
    assert (facts["indexed"], facts["failed"]) == (9, 1)
    assert [path for path, _reason in facts["failures"]] == [str(indexed.root / "broken.jpg")]
    assert Path(facts["index_file"]).is_file()
    assert facts["total_bytes"] == sum(row.size for row in indexed.rows.values())
    assert facts["first_taken"] == facts["last_taken"] == "2021-07-04T18:30:00"


def test_info_text(indexed: Indexed) -> None:
    """Plain `info` prints one `key: value` line per fact."""
    result = invoke("info", "--library", indexed.library)
    assert result.exit_code == 0, result.output
    facts = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines() if "skipped" not in line)
    assert facts["library"] == str(indexed.library)
    assert facts["model"].endswith(indexed.identity)
    assert facts["dim"] == str(TINY_CONFIG["embed_dim"])
    assert Path(facts["index file"]).is_file()


@pytest.mark.parametrize("command", [["info"], ["search", "dog"], ["similar", "x.png"]])
def test_missing_library_says_to_run_index(tmp_path: Path, command: list[str]) -> None:
    """No library at the given place: exit 1 telling to run `clipsearch index`; nothing is created."""
    where = tmp_path / "nolibrary"
    output = assert_clean_failure(invoke(*command, env={"CLIPSEARCH_LIBRARY": str(where)}))
    assert "clipsearch index" in output
    assert not where.exists()


# --- offline weights ---------------------------------------------------------------------------


def _default_weights_cached() -> bool:
    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    repo = os.path.split(cfg.get("hf_hub", ""))[0]
    names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def test_pretrained_tag_offline_fails_fast(
    tiny_config: Path, tmp_path: Path, expect_network_attempt: list[str]
) -> None:
    """ViT-B-32 with a pretrained tag and no cached weights: exit 1 within seconds, saying the weights
    are not cached and how to fix it; the failed run creates no library (so binds it to no model)."""
    if _default_weights_cached():
        pytest.skip("the ViT-B-32 laion2b_s34b_b79k weights are cached on this machine")
    factory.pattern_png(tmp_path / "photos" / "a.png", seed=1)
    library = tmp_path / "lib"
    started = time.monotonic()
    result = invoke("index", tmp_path / "photos", "--library", library, "--pretrained", "laion2b_s34b_b79k", *CPU)
    assert time.monotonic() - started < 20
    output = assert_clean_failure(result)
    assert "not cached" in output or "not in the cache" in output
    assert "--pretrained /path/to/checkpoint" in output
    assert expect_network_attempt or "offline" in output.lower() or "HF_HUB_OFFLINE" in output
    assert not library.exists()  # nothing is created before the model has loaded
    retried = invoke("index", tmp_path / "photos", "--library", library, *model_args(tiny_config))
    assert retried.exit_code == 0, retried.output


# --- version and help --------------------------------------------------------------------------


def test_version() -> None:
    """`--version` prints the installed package version."""
    result = invoke("--version")
    assert result.exit_code == 0
    assert version("clipsearch") in result.output


def _examples(command: click.Command) -> list[str]:
    lines = (command.help or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Example:")
    return [line.strip() for line in lines[start + 1 :] if line.strip()]


@pytest.mark.parametrize("name", [None, "index", "search", "similar", "info"])
def test_help_shows_the_docstring_example(name: str | None) -> None:
    """Each command's `--help` (and the group's) includes the example lines of its docstring."""
    command = cli if name is None else cli.commands[name]
    result = invoke(*([name] if name else []), "--help")
    assert result.exit_code == 0
    examples = _examples(command)
    assert examples and all(line.startswith("clipsearch ") for line in examples)
    for line in examples:
        assert line in result.output


def test_info_reports_the_devices(indexed: Indexed) -> None:
    """`info` says where the model would run and how many GPUs faiss sees (none on a faiss-cpu machine)."""
    facts = json.loads(invoke("info", "--json", "--library", indexed.library).stdout)
    assert facts["model_device"] in ("cpu", "cuda", "mps")
    assert isinstance(facts["faiss_gpus"], int) and facts["faiss_gpus"] >= 0


def test_database_url_puts_the_store_elsewhere(
    tiny_config: Path, tmp_path: Path, store_url: str, store_backend: str
) -> None:
    """`--database-url` (any SQLAlchemy URL: a SQLite file elsewhere, a PostgreSQL database) holds the rows;
    the library folder keeps only the FAISS file. index, search, similar and info all work on it."""
    photos = tmp_path / "photos"
    for seed in range(3):
        factory.pattern_png(photos / f"p{seed}.png", seed=seed)
    url = store_url
    library = tmp_path / "library"
    result = invoke("index", photos, "--library", library, "--database-url", url, *model_args(tiny_config))
    assert result.exit_code == 0, result.output
    assert not (library / "library.db").exists() and list(library.glob("index-*.faiss"))
    if store_backend == "sqlite":
        assert Path(url.removeprefix("sqlite:///")).is_file()
    where = ["--library", library, "--database-url", url, *CPU]
    found = invoke("similar", photos / "p1.png", "--include-self", "-k", "1", "--paths", *where)
    assert found.stdout.strip() == str(photos / "p1.png")
    hits = invoke("search", "a pattern", "-k", "5", "--paths", *where)
    assert hits.exit_code == 0, hits.output
    assert sorted(hits.stdout.split()) == sorted(str(photos / f"p{seed}.png") for seed in range(3))
    facts = json.loads(invoke("info", "--json", "--library", library, "--database-url", url).stdout)
    assert facts["database"] == url and facts["indexed"] == 3
    again = invoke("index", photos, "--library", library, "--database-url", url, *model_args(tiny_config), "--json")
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["embedded"], json.loads(again.stdout)["unchanged"]) == (0, 3)


def test_an_unreachable_database_url_is_one_clear_message(tmp_path: Path, postgres_url: str) -> None:
    """A PostgreSQL URL whose server does not answer: one message naming --database-url, no traceback, and no
    library folder left behind."""
    with socket.socket() as probe:  # bound, never listening: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        url = make_url(postgres_url).set(port=probe.getsockname()[1]).render_as_string(hide_password=False)
        result = invoke("info", "--library", tmp_path / "library", "--database-url", url)
    output = assert_clean_failure(result)
    assert "cannot connect to the database" in output and "--database-url" in output
    assert not (tmp_path / "library").exists()


def test_model_named_by_a_relative_path_without_pretrained_is_the_library_model(
    indexed: Indexed, tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model ./tiny.json` from the config's folder, with no `--pretrained`, is the recorded model: its
    recorded weights (`none`) are taken, and the output is the same as with no `--model` at all."""
    monkeypatch.chdir(tiny_config.parent)
    implicit = invoke("search", "dog", "--json", "--library", indexed.library, *CPU)
    relative = invoke("search", "dog", "--json", "--library", indexed.library, "--model", f"./{tiny_config.name}", *CPU)
    assert relative.exit_code == 0, relative.output
    assert relative.stdout == implicit.stdout
