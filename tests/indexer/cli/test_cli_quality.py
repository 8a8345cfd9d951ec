"""`clipsearch generate-dataset`, `train` and `bench recall` through click's CliRunner on the full group.

Everything runs with the tiny open_clip config on a generated scene set of a few 32 px images, on the CPU.
Printed numbers are checked against the JSON form and against an exact numpy recall over the vectors the
command left in its library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from PIL import Image

from indexer.bench_recall import LINKS_FOLDER
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.quality.captions import load_captions
from retrieval.quality.recall import Recall, recall_at_k
from tests.clirunner import assert_clean_failure, invoke
from tests.conftest import TINY_CONFIG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = ["--device", "cpu"]
TRAIN_IMAGES, VAL_IMAGES = 8, 12


def error_lines(result: Result) -> list[str]:
    """The non-empty lines of the error output (warnings about random weights left out)."""
    return [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]


def ok_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


@dataclass
class Scenes:
    folder: Path
    train: Path
    val: Path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Scenes:
    """A generated train/val set of 32 px scenes, made through the CLI once per module."""
    folder = tmp_path_factory.mktemp("quality") / "scenes"
    result = invoke(
        "generate-dataset", folder, "--size", f"train={TRAIN_IMAGES}", "--size", f"val={VAL_IMAGES}",
        "--image-size", "32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return Scenes(folder, folder / "train.jsonl", folder / "val.jsonl")


def tiny_args(config: Path, pretrained: str | Path = "none") -> list[str | Path]:
    return ["--model", config, "--pretrained", pretrained, *CPU]


# --- generate-dataset ---------------------------------------------------------------------------------------


def test_generate_dataset_writes_splits_and_prints_a_line_each(tmp_path: Path) -> None:
    """Each split's JSONL, images of the asked size and the manifest are written; one line per split names
    its counts and file; the files load as captions files."""
    folder = tmp_path / "small"
    result = invoke("generate-dataset", folder, "--size", "train=8", "--size", "val=4", "--image-size", "32")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    # style v2 (the default): 3 full captions per image, and 3 short ones more in training splits
    assert re.fullmatch(rf"\s*train: 8 images, 48 captions -> {re.escape(str(folder / 'train.jsonl'))}", lines[0])
    assert re.fullmatch(rf"\s*val: 4 images, 12 captions -> {re.escape(str(folder / 'val.jsonl'))}", lines[1])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"]["sizes"] == {"train": 8, "val": 4}
    assert manifest["generator"] == "clipsearch.scenes v3"
    for split, count, captions in (("train", 8, 6), ("val", 4, 3)):
        data = load_captions(folder / f"{split}.jsonl")
        assert len(data) == count and len(data.captions) == captions * count
        assert all(path.parent == folder / "images" / split for path in data.images)
        with Image.open(data.images[0]) as image:
            assert image.size == (32, 32)
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["train", "val"]


def test_generate_dataset_again_is_a_no_op_and_other_parameters_are_refused(tmp_path: Path) -> None:
    """The same command on a generated folder keeps the files; other parameters there fail with exit 1."""
    folder = tmp_path / "again"
    args = ["generate-dataset", folder, "--size", "val=3", "--image-size", "32"]
    assert invoke(*args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before
    other = invoke("generate-dataset", folder, "--size", "val=3", "--image-size", "48")
    output = assert_clean_failure(other)
    assert "other parameters" in output and str(folder) in output


def test_generate_dataset_styles_v1_and_sketch(tmp_path: Path) -> None:
    """--style v1 writes the first generator's data (its manifest name); --style sketch writes test splits
    and refuses a training split with a one-line error."""
    v1 = invoke("generate-dataset", tmp_path / "v1", "--style", "v1", "--size", "train=4", "--image-size", "32")
    assert v1.exit_code == 0, v1.output
    assert "train: 4 images, 12 captions" in v1.stdout
    assert json.loads((tmp_path / "v1" / "manifest.json").read_text())["generator"] == "clipsearch.scenes v2"
    sketch = invoke("generate-dataset", tmp_path / "sk", "--style", "sketch", "--size", "test=3", "--image-size", "32")
    assert sketch.exit_code == 0, sketch.output
    refused = invoke("generate-dataset", tmp_path / "bad", "--style", "sketch", "--size", "train=3")
    assert "evaluation only" in assert_clean_failure(refused)


@pytest.mark.parametrize("value", ["train:8", "train=", "train=many", "train=-1", "=5"])
def test_generate_dataset_bad_size_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """A --size that is not SPLIT=N: usage error (exit 2) naming the option, the value and the form."""
    result = invoke("generate-dataset", tmp_path / "out", "--size", value)
    output = assert_clean_failure(result, code=2)
    assert "--size" in output and f"'{value}' is not SPLIT=N" in output
    assert not (tmp_path / "out").exists()


def test_generate_dataset_unknown_split_is_a_one_line_error(tmp_path: Path) -> None:
    """An unknown split: exit 1 with one line naming it and the known splits; nothing written."""
    result = invoke("generate-dataset", tmp_path / "out", "--size", "bogus=3", "--size", "val=2")
    assert_clean_failure(result)
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert "unknown split(s) bogus" in lines[0]
    assert all(split in lines[0] for split in ("train", "val", "test", "heldout-train", "heldout-test"))
    assert not (tmp_path / "out").exists()


def test_generate_dataset_with_only_empty_splits_is_a_one_line_error(tmp_path: Path) -> None:
    """Every split of size 0: exit 1 saying there is nothing to generate (not a missing-file traceback)."""
    result = invoke("generate-dataset", tmp_path / "out", "--size", "val=0")
    assert_clean_failure(result)
    lines = error_lines(result)
    assert len(lines) == 1 and "nothing to generate" in lines[0], lines
    assert not (tmp_path / "out").exists()


# --- train --------------------------------------------------------------------------------------------------


@dataclass
class Trained:
    run: Path
    args: list[str | Path]
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def trained(scenes: Scenes, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One epoch of the 8 training scenes in batches of 4, validated on the val split, with --json."""
    run = tmp_path_factory.mktemp("train") / "run"
    args: list[str | Path] = [
        "train", scenes.train, "--val", scenes.val, *tiny_args(tiny_config), "--epochs", "1", "--batch-size", "4",
        "--json", "-o", run,
    ]  # fmt: skip
    return Trained(run, args, ok_json(invoke(*args)))


def test_train_one_epoch_json_summary_and_usable_checkpoint(
    trained: Trained, scenes: Scenes, tiny_config: Path
) -> None:
    """One epoch of 8 images in batches of 4 is 2 steps; the JSON summary says so, best.pt, last.pt and
    train.json are written, and `use_with` is a model spec that `bench recall` loads."""
    summary, run = trained.summary, trained.run
    assert (summary["steps"], summary["total_steps"], summary["resumed_from"]) == (2, 2, 0)
    assert summary["best_step"] == 2 and summary["skipped_images"] == 0
    assert np.isfinite(summary["final_loss"])
    assert set(summary["best_val"]) == {"text_to_image", "image_to_text"}
    assert set(summary["best_val"]["text_to_image"]) == {"R@1", "R@5", "R@10"}
    for name in ("best.pt", "last.pt", "train.json"):
        assert (run / name).is_file(), name
    assert summary["use_with"] == f"--model {tiny_config} --pretrained {run / 'best.pt'}"
    assert summary["output"] == str(run)

    benched = ok_json(invoke("bench", "recall", scenes.val, *tiny_args(tiny_config, run / "best.pt"), "--json"))
    assert "checkpoint sha256:" in benched["model"]
    assert benched["images"] == VAL_IMAGES


def test_train_again_without_resume_is_refused(trained: Trained) -> None:
    """The same command again into the run's folder fails with exit 1, tells to pass --resume, and leaves
    the run's weights alone."""
    weights = (trained.run / "best.pt").read_bytes()
    output = assert_clean_failure(invoke(*trained.args))
    assert "--resume" in output and str(trained.run) in output
    assert (trained.run / "best.pt").read_bytes() == weights


def test_train_checkpoint_given_as_model_says_to_pass_it_as_pretrained(
    trained: Trained, scenes: Scenes, tmp_path: Path
) -> None:
    """`--model best.pt`: exit 1 telling that it is a checkpoint to pass as --pretrained; no run folder made."""
    result = invoke(
        "train", scenes.train, "--model", trained.run / "best.pt", *CPU, "--batch-size", "4", "-o", tmp_path / "b"
    )
    output = assert_clean_failure(result)
    assert "is a checkpoint, not a model config" in output and "--pretrained" in output
    assert not (tmp_path / "b").exists()


def test_train_resume_continues_after_max_steps(scenes: Scenes, tiny_config: Path, tmp_path: Path) -> None:
    """`--max-steps 1` stops after step 1; the same run with --resume goes on from step 1 to the end (2)."""
    run = tmp_path / "run"
    base = ["train", scenes.train, *tiny_args(tiny_config), "--epochs", "1", "--batch-size", "4", "--json", "-o", run]
    first = ok_json(invoke(*base, "--max-steps", "1"))
    assert (first["steps"], first["total_steps"], first["resumed_from"]) == (1, 2, 0)
    resumed = ok_json(invoke(*base, "--resume"))
    assert (resumed["steps"], resumed["resumed_from"]) == (2, 1)
    history = json.loads((run / "train.json").read_text())["history"]
    assert [entry["step"] for entry in history] == [1, 2]


def test_train_time_budget_is_minutes_and_ends_the_run(scenes: Scenes, tiny_config: Path, tmp_path: Path) -> None:
    """`--time-budget 0.02` (1.2 s) on 10000 epochs: the run ends long before its last step, with a summary,
    and train.json records the budget in seconds; 0 minutes is refused as a usage error."""
    run = tmp_path / "run"
    base = ["train", scenes.train, *tiny_args(tiny_config), "--epochs", "10000", "--batch-size", "4", "-o", run]
    summary = ok_json(invoke(*base, "--time-budget", "0.02", "--json"))
    assert 0 < summary["steps"] < summary["total_steps"] == 20000
    assert summary["seconds"] >= 1.2
    assert json.loads((run / "train.json").read_text())["options"]["time_budget"] == pytest.approx(1.2)
    refused = invoke(*base[:-1], tmp_path / "other", "--time-budget", "0")
    assert refused.exit_code == 2 and "--time-budget" in refused.output


def test_train_resume_with_nothing_to_resume(scenes: Scenes, tiny_config: Path, tmp_path: Path) -> None:
    """--resume on an empty folder: exit 1 saying there is nothing to resume."""
    run = tmp_path / "empty"
    result = invoke("train", scenes.train, *tiny_args(tiny_config), "--batch-size", "4", "--resume", "-o", run)
    output = assert_clean_failure(result)
    assert "nothing to resume" in output and "last.pt" in output and "drop --resume" in output


# --- bench recall -------------------------------------------------------------------------------------------


def exact_recall_of_library(library_dir: Path, captions: Path, encoder: Encoder, ks: tuple[int, ...]) -> Recall:
    """Exact recall over the image vectors the command left in its library and freshly encoded captions."""
    data = load_captions(captions)
    with Library(library_dir) as library:
        link_of = {link.resolve(): link for link in (library.directory / LINKS_FOLDER).iterdir()}
        assert sorted(link_of) == sorted(image.resolve() for image in data.images)
        records = [library.store.image_by_path(str(link_of[image.resolve()])) for image in data.images]
        ids = np.asarray([record.id for record in records if record is not None])
        assert len(ids) == len(data)
        vectors = library.load_index(gpu="never").reconstruct(ids)
    return recall_at_k(vectors, encoder.encode_texts(list(data.captions)), data.caption_image, ks)


def test_bench_attributes_table_and_json(scenes: Scenes, tiny_config: Path) -> None:
    """The table has one row per attribute with the numbers --json gives; every query is in the JSON with
    its precision; a split without scenes (a plain captions file) fails in one line."""
    result = invoke("bench", "attributes", scenes.val, *tiny_args(tiny_config), "-k", "1", "-k", "3")
    assert result.exit_code == 0, result.output
    report = ok_json(invoke("bench", "attributes", scenes.val, *tiny_args(tiny_config), "-k", "1", "-k", "3", "--json"))
    assert report["images"] == VAL_IMAGES and report["ks"] == [1, 3]
    assert list(report["attributes"]) == [
        "shape",
        "colour",
        "count",
        "size",
        "position",
        "background",
        "texture",
        "colour+shape",
    ]
    assert len(report["queries"]) == sum(int(row["queries"]) for row in report["attributes"].values())
    for attribute, row in report["attributes"].items():
        line = f"| {attribute} | {int(row['queries'])} | {row['P@1']:.1f} | {row['P@3']:.1f} |"
        assert line in result.stdout, result.stdout
    plain = scenes.folder / "plain.csv"
    plain.write_text(f"image,caption\n{scenes.folder / 'images' / 'val' / '000000.jpg'},a picture\n")
    failed = invoke("bench", "attributes", plain, *tiny_args(tiny_config))
    assert_clean_failure(failed)


def test_bench_recall_table(scenes: Scenes, tiny_config: Path) -> None:
    """The human output: dataset with its size, the model, a header R@1 R@5 R@10 and one row per direction
    with the same percentages as --json gives, and the note that the exact search agrees."""
    result = invoke("bench", "recall", scenes.val, *tiny_args(tiny_config))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"dataset: {scenes.val} ({VAL_IMAGES} images, {3 * VAL_IMAGES} captions)" in out
    assert re.search(r"^model:\s+tiny-test\.json: ", out, re.M)
    assert re.search(r"^recall \(%\)\s+R@1\s+R@5\s+R@10$", out, re.M)
    report = ok_json(invoke("bench", "recall", scenes.val, *tiny_args(tiny_config), "--json"))
    for label, key in (("text->image", "text_to_image"), ("image->text", "image_to_text")):
        row = re.search(rf"^index {label}\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)$", out, re.M)
        assert row, out
        assert row.groups() == tuple(f"{report['index'][key][f'R@{k}']:.2f}" for k in (1, 5, 10))
    assert "exact search (numpy) over the same vectors gives the same numbers" in out
    assert "RANDOM weights" in result.stderr


def test_bench_recall_json_matches_exact_recall_of_its_library(
    scenes: Scenes, tiny_config: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    """--json has the documented keys; with --library kept, its numbers equal an exact recall computed here
    over the library's vectors, and a second run without --model reuses that library and its model."""
    library = tmp_path / "benchlib"
    args = ["bench", "recall", scenes.val, "--library", library, "--batch-size", "8", "--json"]
    report = ok_json(invoke(*args, *tiny_args(tiny_config)))
    assert {"dataset", "images", "captions", "model", "model_key", "ks", "index", "exact"} <= set(report)
    assert report["dataset"] == str(scenes.val)
    assert (report["images"], report["captions"], report["ks"]) == (VAL_IMAGES, 3 * VAL_IMAGES, [1, 5, 10])
    assert report["model_key"] == tiny_encoder.identity.key
    assert report["index_matches_exact"] is True and report["index"] == report["exact"]
    assert report["ann"] is None and report["unreadable_images"] == 0
    expected = exact_recall_of_library(library, scenes.val, tiny_encoder, (1, 5, 10))
    assert report["index"] == json.loads(json.dumps(expected.to_json()))

    with Library(library) as opened:
        generation = opened.store.generation()
        assert opened.store.count_vectors() == VAL_IMAGES
    again = ok_json(invoke(*args, *CPU))
    assert again["model_key"] == report["model_key"]
    assert again["index"] == report["index"]
    with Library(library) as opened:
        assert opened.store.generation() == generation, "the second run must reuse the indexed images"
        assert opened.store.count_vectors() == VAL_IMAGES


def test_bench_recall_custom_ks(scenes: Scenes, tiny_config: Path) -> None:
    """`-k 1 -k 3` measures exactly those cut-offs, in JSON and in the table header."""
    report = ok_json(invoke("bench", "recall", scenes.val, "-k", "1", "-k", "3", "--json", *tiny_args(tiny_config)))
    assert report["ks"] == [1, 3]
    for direction in ("text_to_image", "image_to_text"):
        assert list(report["index"][direction]) == ["R@1", "R@3"]
    table = invoke("bench", "recall", scenes.val, "-k", "3", "-k", "1", *tiny_args(tiny_config))
    assert table.exit_code == 0, table.output
    assert re.search(r"^recall \(%\)\s+R@3\s+R@1$", table.stdout, re.M)
    assert "R@5" not in table.stdout
    assert_clean_failure(invoke("bench", "recall", scenes.val, "-k", "0", *tiny_args(tiny_config)), code=2)


def test_bench_recall_ann_in_json_and_table(scenes: Scenes, tiny_config: Path) -> None:
    """--ann HNSW32 adds its recall and overlap; a factory faiss rejects is a one-line error."""
    report = ok_json(invoke("bench", "recall", scenes.val, "--ann", "HNSW32", "--json", *tiny_args(tiny_config)))
    assert report["ann"]["factory"] == "HNSW32"
    assert all(0 <= v <= 100 for v in report["ann"]["recall"]["text_to_image"].values())
    table = invoke("bench", "recall", scenes.val, "--ann", "HNSW32", *tiny_args(tiny_config))
    assert re.search(r"^HNSW32 text->image(\s+\d+\.\d\d){3}$", table.stdout, re.M), table.stdout
    assert "HNSW32 finds of the exact top-k: @1 " in table.stdout
    bad = invoke("bench", "recall", scenes.val, "--ann", "Nonsense99", *tiny_args(tiny_config))
    assert_clean_failure(bad)
    lines = error_lines(bad)
    assert len(lines) == 1 and "faiss cannot build index 'Nonsense99'" in lines[0], lines


def test_bench_recall_other_model_on_kept_library_is_refused(scenes: Scenes, tiny_config: Path, tmp_path: Path) -> None:
    """A kept library remembers its model: another model there fails with exit 1 naming both."""
    library = tmp_path / "benchlib"
    assert invoke("bench", "recall", scenes.val, "--library", library, *tiny_args(tiny_config)).exit_code == 0
    other = tmp_path / "other-tiny.json"
    other.write_text(json.dumps({**TINY_CONFIG, "embed_dim": 16}))
    output = assert_clean_failure(invoke("bench", "recall", scenes.val, "--library", library, *tiny_args(other)))
    assert "tiny-test" in output and "other-tiny" in output


def test_bench_recall_missing_captions_file(tmp_path: Path, tiny_config: Path) -> None:
    """A captions file that does not exist: exit 1, one line naming it."""
    result = invoke("bench", "recall", tmp_path / "nope.jsonl", *tiny_args(tiny_config))
    assert_clean_failure(result)
    lines = error_lines(result)
    assert lines == [f"Error: captions file not found: {tmp_path / 'nope.jsonl'}"]


def test_bench_recall_malformed_captions(scenes: Scenes, tmp_path: Path, tiny_config: Path) -> None:
    """Bad lines are all reported at once by line number, without a traceback; no library is left behind."""
    image = next((scenes.folder / "images" / "val").iterdir())
    captions = tmp_path / "bad.jsonl"
    captions.write_text(
        json.dumps({"image": str(image), "caption": "fine"})
        + "\n{not json\n"
        + json.dumps({"image": "missing.jpg", "caption": "gone"})
        + "\n"
        + json.dumps({"image": str(image), "caption": "   "})
        + "\n"
    )
    result = invoke("bench", "recall", captions, "--library", tmp_path / "lib", *tiny_args(tiny_config))
    output = assert_clean_failure(result)
    assert "3 problem(s)" in output
    assert "line 2: not valid JSON" in output
    assert f"line 3: image not found: {tmp_path / 'missing.jpg'}" in output
    assert "line 4: empty caption" in output
    assert not (tmp_path / "lib").exists()


def test_bench_recall_unknown_captions_format(tmp_path: Path, tiny_config: Path) -> None:
    """A file whose suffix says nothing about its format: one line telling to pass --format."""
    captions = tmp_path / "captions.txt"
    captions.write_text("image,caption\na.jpg,a cat\n")
    result = invoke("bench", "recall", captions, *tiny_args(tiny_config))
    assert_clean_failure(result)
    lines = error_lines(result)
    assert len(lines) == 1 and "--format" in lines[0] and "captions.txt" in lines[0], lines
