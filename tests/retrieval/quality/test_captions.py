"""Tests of retrieval.quality.captions.load_captions: every format, auto-detection, splits, and every rejection.

Captions files and the images they list are real files written to tmp_path (JPEGs and PNGs made with Pillow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retrieval.errors import DatasetError
from retrieval.quality.captions import CaptionedDataset, load_captions
from tests import imagefactory
from tests.jsonlines import write_jsonl


def _image(path: Path, seed: int = 0) -> Path:
    """A small real image: a JPEG for .jpg/.jpeg names, a PNG otherwise."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return imagefactory.solid_jpeg(path, color=(seed * 40 % 256, 90, 200), size=(16, 12))
    return imagefactory.pattern_png(path, seed=seed, size=(16, 16))


def _pairs(dataset: CaptionedDataset) -> list[tuple[str, str]]:
    """(image file name, caption) for every caption, in order: what the loader paired up."""
    pairs = zip(dataset.captions, dataset.caption_image, strict=True)
    return [(dataset.images[owner].name, text) for text, owner in pairs]


def _error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(DatasetError) as excinfo:
        load_captions(path, **kwargs)
    return str(excinfo.value)


# --- CSV / TSV -------------------------------------------------------------------------------------


def test_csv_groups_rows_by_image_in_first_appearance_order(tmp_path: Path) -> None:
    """Several rows per image become one image with several captions; images keep first-appearance order,
    captions keep file order, and each caption points at its own image; whitespace is collapsed."""
    for seed, name in enumerate(("b.jpg", "a.png", "c.jpeg")):
        _image(tmp_path / name, seed)
    path = tmp_path / "captions.csv"
    path.write_text(
        "image,caption\n"
        "b.jpg,a red car\n"
        "a.png,  two   dogs\ton grass  \n"
        'b.jpg,"the car, parked"\n'
        "c.jpeg,a cat\n"
        "a.png,dogs playing\n",
        encoding="utf-8",
    )
    dataset = load_captions(path)
    assert dataset.source == path
    assert dataset.images == (tmp_path / "b.jpg", tmp_path / "a.png", tmp_path / "c.jpeg")
    assert dataset.captions == ("a red car", "two dogs on grass", "the car, parked", "a cat", "dogs playing")
    assert dataset.caption_image == (0, 1, 0, 2, 1)
    assert dataset.captions_of(1) == ["two dogs on grass", "dogs playing"]
    assert len(dataset) == 3
    assert dataset.skipped_missing == 0


def test_csv_accepts_alternative_column_names_any_case_with_bom(tmp_path: Path) -> None:
    """`filepath`/`text` headers in any case and padding, a UTF-8 BOM and extra columns are all accepted."""
    _image(tmp_path / "x.png", 1)
    path = tmp_path / "captions.csv"
    path.write_text("id, FilePath ,Text,score\n7,x.png,café au lait,0.5\n", encoding="utf-8-sig")
    dataset = load_captions(path)
    assert _pairs(dataset) == [("x.png", "café au lait")]


@pytest.mark.parametrize(("image_col", "caption_col"), [("file", "caption"), ("path", "text"), ("image", "text")])
def test_csv_every_documented_column_name_works(tmp_path: Path, image_col: str, caption_col: str) -> None:
    """Each accepted image column name pairs with each accepted caption column name."""
    _image(tmp_path / "x.jpg")
    path = tmp_path / "captions.csv"
    path.write_text(f"{image_col},{caption_col}\nx.jpg,hello\n", encoding="utf-8")
    assert _pairs(load_captions(path)) == [("x.jpg", "hello")]


def test_tsv_suffix_splits_on_tabs_even_when_captions_hold_commas(tmp_path: Path) -> None:
    """A .tsv file is tab-separated, so commas inside captions stay in the caption."""
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.png", 2)
    path = tmp_path / "captions.tsv"
    path.write_text("image\tcaption\na.jpg\tred, green, blue\nb.png\tone\na.jpg\ttwo, three\n", encoding="utf-8")
    dataset = load_captions(path)
    assert _pairs(dataset) == [("a.jpg", "red, green, blue"), ("b.png", "one"), ("a.jpg", "two, three")]
    assert dataset.caption_image == (0, 1, 0)


def test_tab_separated_content_in_a_csv_file_is_sniffed(tmp_path: Path) -> None:
    """A .csv file with tabs and no comma at all is read as tab-separated."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.csv"
    path.write_text("image\tcaption\na.jpg\ta boat at sea\n", encoding="utf-8")
    assert _pairs(load_captions(path)) == [("a.jpg", "a boat at sea")]


def test_csv_split_filter_keeps_only_that_split_and_renumbers_images(tmp_path: Path) -> None:
    """`split` keeps the rows of that split only; image indices count only the kept images."""
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _image(tmp_path / name, seed)
    path = tmp_path / "captions.csv"
    path.write_text(
        "image,caption,split\na.jpg,a1,train\nb.jpg,b1,val\nc.jpg,c1,val\nb.jpg,b2, val \na.jpg,a2,train\n",
        encoding="utf-8",
    )
    val = load_captions(path, split="val")
    assert val.images == (tmp_path / "b.jpg", tmp_path / "c.jpg")
    assert _pairs(val) == [("b.jpg", "b1"), ("c.jpg", "c1"), ("b.jpg", "b2")]
    assert val.caption_image == (0, 1, 0)
    train = load_captions(path, split="train")
    assert _pairs(train) == [("a.jpg", "a1"), ("a.jpg", "a2")]
    assert len(load_captions(path)) == 3


def test_csv_split_rows_outside_the_split_are_not_checked(tmp_path: Path) -> None:
    """A missing image in another split does not stop loading the requested split."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.csv"
    path.write_text("image,caption,split\na.jpg,a1,test\ngone.jpg,g1,train\n", encoding="utf-8")
    assert _pairs(load_captions(path, split="test")) == [("a.jpg", "a1")]
    assert "gone.jpg" in _error(path)


# --- JSONL -----------------------------------------------------------------------------------------


def test_jsonl_caption_and_captions_forms_merge_per_image(tmp_path: Path) -> None:
    """`caption` and `captions` lines for the same image merge under one index; blank lines and extra keys are
    ignored; whitespace inside captions is collapsed."""
    _image(tmp_path / "dog.png", 3)
    _image(tmp_path / "cat.jpg", 4)
    path = tmp_path / "captions.jsonl"
    path.write_text(
        json.dumps({"image": "dog.png", "captions": ["a dog", " a\n brown  dog "], "id": 1})
        + "\n\n   \n"
        + json.dumps({"image": "cat.jpg", "caption": "a cat", "license": "cc"})
        + "\n"
        + json.dumps({"image": "dog.png", "caption": "dog again"})
        + "\n",
        encoding="utf-8",
    )
    dataset = load_captions(path)
    assert dataset.images == (tmp_path / "dog.png", tmp_path / "cat.jpg")
    assert dataset.captions == ("a dog", "a brown dog", "a cat", "dog again")
    assert dataset.caption_image == (0, 0, 1, 0)
    assert dataset.captions_of(0) == ["a dog", "a brown dog", "dog again"]


def test_jsonl_split_filter(tmp_path: Path) -> None:
    """Only lines whose "split" equals the requested one are kept; no split keeps all of them."""
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _image(tmp_path / name, seed)
    path = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image": "a.jpg", "caption": "a", "split": "train"},
            {"image": "b.jpg", "captions": ["b1", "b2"], "split": "test"},
            {"image": "c.jpg", "caption": "c"},
        ],
    )
    test = load_captions(path, split="test")
    assert _pairs(test) == [("b.jpg", "b1"), ("b.jpg", "b2")]
    assert test.caption_image == (0, 0)
    assert len(load_captions(path)) == 3


# --- paths -----------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_captions_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative image paths are taken from the captions file's folder, whatever the working directory."""
    data = tmp_path / "data"
    _image(data / "imgs" / "one.jpg")
    path = write_jsonl(data / "captions.jsonl", [{"image": "imgs/one.jpg", "caption": "one"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_captions(path).images == (data / "imgs" / "one.jpg",)


def test_images_root_overrides_the_captions_folder_and_absolute_paths_stay(tmp_path: Path) -> None:
    """With `images_root`, relative paths resolve there; absolute paths are used as they are."""
    root = tmp_path / "pictures"
    _image(root / "rel.png", 1)
    absolute = _image(tmp_path / "other" / "abs.jpg", 2)
    path = write_jsonl(
        tmp_path / "meta" / "captions.jsonl",
        [{"image": "rel.png", "caption": "relative"}, {"image": str(absolute), "caption": "absolute"}],
    )
    dataset = load_captions(path, images_root=root)
    assert dataset.images == (root / "rel.png", absolute)
    # Without images_root the relative one is looked for next to the captions file, where it is not.
    assert str(tmp_path / "meta" / "rel.png") in _error(path)


# --- Karpathy JSON ---------------------------------------------------------------------------------


def _karpathy(dataset: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dataset": dataset, "images": entries}


def _entry(filename: str, split: str, *sentences: str, filepath: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": filename,
        "split": split,
        "sentences": [{"raw": text, "tokens": text.split()} for text in sentences],
    }
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """A Karpathy COCO split file with train/restval/val/test images under val2014/ and train2014/."""
    entries = [
        _entry("t0.jpg", "train", "train zero", "train zero again", filepath="train2014"),
        _entry("v0.jpg", "val", "val zero", filepath="val2014"),
        _entry("r0.jpg", "restval", "restval zero", filepath="val2014"),
        _entry("s0.jpg", "test", "  test   zero ", "test zero b", "test zero c", filepath="val2014"),
        _entry("s1.jpg", "test", "test one", filepath="val2014"),
    ]
    for seed, entry in enumerate(entries):
        _image(tmp_path / "coco" / entry["filepath"] / entry["filename"], seed)
    path = tmp_path / "coco" / "dataset_coco.json"
    path.write_text(json.dumps(_karpathy("coco", entries)), encoding="utf-8")
    return path


def test_coco_karpathy_default_split_is_test_and_joins_filepath(coco: Path) -> None:
    """Auto-detected from "dataset": "coco"; the test split by default; paths are filepath/filename."""
    dataset = load_captions(coco)
    assert dataset.images == (coco.parent / "val2014" / "s0.jpg", coco.parent / "val2014" / "s1.jpg")
    assert dataset.captions == ("test zero", "test zero b", "test zero c", "test one")
    assert dataset.caption_image == (0, 0, 0, 1)
    assert load_captions(coco, format="coco-karpathy") == dataset


def test_coco_karpathy_train_includes_restval(coco: Path) -> None:
    """split="train" is Karpathy's training set: train plus restval, in file order."""
    dataset = load_captions(coco, split="train")
    assert [path.relative_to(coco.parent).as_posix() for path in dataset.images] == [
        "train2014/t0.jpg",
        "val2014/r0.jpg",
    ]
    assert _pairs(dataset) == [("t0.jpg", "train zero"), ("t0.jpg", "train zero again"), ("r0.jpg", "restval zero")]
    assert _pairs(load_captions(coco, split="val")) == [("v0.jpg", "val zero")]
    assert _pairs(load_captions(coco, split="restval")) == [("r0.jpg", "restval zero")]


def test_flickr_karpathy_detected_by_dataset_key_and_train_excludes_restval(tmp_path: Path) -> None:
    """ "dataset": "flickr30k" picks the Flickr reader: flat file names (no filepath), and train is train only."""
    entries = [
        _entry("1.jpg", "train", "first"),
        _entry("2.jpg", "restval", "second"),
        _entry("3.jpg", "test", "third a", "third b"),
        _entry("4.jpg", "val", "fourth"),
    ]
    # A stray "filepath" must not be joined for Flickr30k, whose images all sit in one folder.
    entries[2]["filepath"] = "ignored"
    for seed, entry in enumerate(entries):
        _image(tmp_path / "flickr" / entry["filename"], seed)
    path = tmp_path / "flickr" / "dataset_flickr30k.json"
    path.write_text(json.dumps(_karpathy("flickr30k", entries)), encoding="utf-8")
    test = load_captions(path)
    assert test.images == (tmp_path / "flickr" / "3.jpg",)
    assert test.captions == ("third a", "third b")
    assert _pairs(load_captions(path, split="train")) == [("1.jpg", "first")]
    assert load_captions(path, format="flickr30k-karpathy", split="val").images == (tmp_path / "flickr" / "4.jpg",)


def test_json_without_dataset_key_is_read_as_coco(tmp_path: Path) -> None:
    """A .json split file with no "dataset" key is treated as COCO (filepath joined)."""
    _image(tmp_path / "val2014" / "a.jpg")
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"images": [_entry("a.jpg", "test", "an apple", filepath="val2014")]}))
    assert load_captions(path).images == (tmp_path / "val2014" / "a.jpg",)


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    """format="jsonl" reads a .txt file that auto-detection could not place."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.txt"
    path.write_text(json.dumps({"image": "a.jpg", "caption": "plain text suffix"}) + "\n")
    assert _pairs(load_captions(path, format="jsonl")) == [("a.jpg", "plain text suffix")]


# --- head ------------------------------------------------------------------------------------------


def test_head_keeps_the_first_images_with_all_their_captions(tmp_path: Path) -> None:
    """head(n) keeps images 0..n-1 and exactly their captions, in order; n >= len returns everything."""
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _image(tmp_path / name, seed)
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\na.jpg,a1\nc.jpg,c1\nb.jpg,b1\na.jpg,a2\nc.jpg,c2\n")
    dataset = load_captions(path)
    head = dataset.head(2)
    assert head.images == (tmp_path / "a.jpg", tmp_path / "c.jpg")
    assert _pairs(head) == [("a.jpg", "a1"), ("c.jpg", "c1"), ("a.jpg", "a2"), ("c.jpg", "c2")]
    assert dataset.head(3) == dataset


# --- rejections ------------------------------------------------------------------------------------


def test_missing_image_message_names_the_path_and_the_line(tmp_path: Path) -> None:
    """A listed image that does not exist is refused with its full path and its line number."""
    _image(tmp_path / "here.jpg")
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\nhere.jpg,ok\nsub/gone.jpg,lost\n")
    message = _error(path)
    assert "1 problem(s)" in message
    assert f"line 3: image not found: {tmp_path / 'sub' / 'gone.jpg'}" in message


def test_csv_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    """Line numbers stay right past blank lines and captions quoted over several lines."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.csv"
    path.write_text('image,caption\n\na.jpg,"a caption\nover two lines"\ngone.jpg,x\n')
    assert "line 5: image not found" in _error(path)
    path.write_text('image,caption\na.jpg,"a caption\nover two lines"\n')
    assert load_captions(path).captions == ("a caption over two lines",)


def test_empty_caption_is_refused_with_its_line(tmp_path: Path) -> None:
    """A blank caption (CSV) or an empty captions list / blank string (JSONL) is an error with the line number."""
    _image(tmp_path / "a.jpg")
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text("image,caption\na.jpg,fine\na.jpg,   \n")
    message = _error(csv_path)
    assert "line 3: empty caption for a.jpg" in message
    jsonl_path = write_jsonl(
        tmp_path / "captions.jsonl",
        [{"image": "a.jpg", "captions": []}, {"image": "a.jpg", "captions": ["ok", " "]}, {"image": "a.jpg"}],
    )
    message = _error(jsonl_path)
    assert "line 1: empty caption for a.jpg" in message
    assert "line 2: empty caption for a.jpg" in message
    assert 'line 3: needs "caption"' in message


def test_empty_caption_is_an_error_even_with_skip_missing(tmp_path: Path) -> None:
    """skip_missing only forgives missing files, never empty captions."""
    _image(tmp_path / "a.jpg")
    path = write_jsonl(tmp_path / "captions.jsonl", [{"image": "a.jpg", "caption": ""}])
    assert "line 1: empty caption" in _error(path, skip_missing=True)


def test_malformed_json_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    """A line that is not JSON, or JSON that is not an object, is reported by line number."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "a.jpg", "caption": "ok"}\n{"image": "a.jpg", "caption": \n["a.jpg", "x"]\n')
    message = _error(path)
    assert "2 problem(s)" in message
    assert "line 2: not valid JSON" in message
    assert "line 3: expected a JSON object" in message


def test_jsonl_missing_or_mistyped_keys_are_named(tmp_path: Path) -> None:
    """Lines without "image", or with "captions" that is not a list of strings, name the key they need."""
    _image(tmp_path / "a.jpg")
    path = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"caption": "no image key"},
            {"image": "a.jpg"},
            {"image": "a.jpg", "captions": "not a list"},
            {"image": "a.jpg", "captions": ["ok", 3]},
            {"image": 12, "caption": "image not a string"},
            {"image": "a.jpg", "caption": "fine"},
        ],
    )
    message = _error(path)
    assert "5 problem(s)" in message
    assert 'line 1: needs "image"' in message
    for line in (2, 3, 4):
        assert f'line {line}: needs "caption" (a string) or "captions" (a list of strings)' in message
    assert 'line 5: needs "image"' in message
    assert "line 6" not in message


def test_empty_image_path_is_refused(tmp_path: Path) -> None:
    """A row with a blank image cell is an error with its line, not a lookup of the folder itself."""
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n  ,a caption\n")
    assert "line 2: empty image path" in _error(path)


def test_csv_without_needed_columns_lists_accepted_names(tmp_path: Path) -> None:
    """A CSV header lacking an image or caption column is refused with the accepted names and what it found."""
    path = tmp_path / "captions.csv"
    path.write_text("picture,description\na.jpg,hello\n")
    message = _error(path)
    for name in ("image", "filepath", "file", "path", "caption", "text"):
        assert name in message
    assert "found: picture, description" in message
    path.write_text("image,description\na.jpg,hello\n")
    assert "found: image, description" in _error(path)
    path.write_text("")
    assert "no header" in _error(path)


def test_unknown_format_name_lists_the_choices(tmp_path: Path) -> None:
    """An unknown format name is refused, naming it and every valid choice."""
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n")
    message = _error(path, format="parquet")
    assert "unknown captions format 'parquet'" in message
    for name in ("csv", "jsonl", "coco-karpathy", "flickr30k-karpathy"):
        assert name in message


def test_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    """A suffix auto-detection does not know is refused with the file name and a pointer to --format."""
    path = tmp_path / "captions.txt"
    path.write_text("image,caption\n")
    message = _error(path)
    assert "captions.txt" in message
    assert "`format`" in message
    assert "jsonl" in message


def test_karpathy_without_the_requested_split_lists_the_splits_present(coco: Path) -> None:
    """Asking a Karpathy file for a split it does not have names the split and lists the ones it has."""
    message = _error(coco, split="validation")
    assert "no image in split 'validation'" in message
    assert "restval, test, train, val" in message


def test_flickr_train_split_with_only_restval_is_refused(tmp_path: Path) -> None:
    """restval counts as train for COCO only: a Flickr file with restval images has no 'train' images."""
    _image(tmp_path / "1.jpg")
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(_karpathy("flickr30k", [_entry("1.jpg", "restval", "one")])))
    assert "its splits are restval" in _error(path, split="train")


def test_malformed_karpathy_files_are_refused_with_a_dataset_error(tmp_path: Path) -> None:
    """Broken JSON, a JSON list, no "images", non-object entries and bad sentences all raise DatasetError."""
    path = tmp_path / "split.json"
    path.write_text("{not json")
    assert "not a Karpathy split JSON" in _error(path)
    path.write_text("[1, 2]")
    assert "not a Karpathy split JSON" in _error(path)
    path.write_text(json.dumps({"dataset": "coco"}))
    assert "not a Karpathy split JSON" in _error(path)
    path.write_text(json.dumps({"dataset": "coco", "images": {"a": 1}}))
    assert "not a Karpathy split JSON" in _error(path)
    path.write_text(json.dumps({"dataset": "coco", "images": ["a.jpg", 3]}))
    message = _error(path)
    assert "image 0: expected a JSON object" in message
    assert "image 1: expected a JSON object" in message
    path.write_text(
        json.dumps(
            {
                "dataset": "coco",
                "images": [
                    {"filename": "a.jpg", "split": "test", "sentences": ["a bare string"]},
                    {"split": "test", "sentences": []},
                    {"filename": "c.jpg", "split": "test", "sentences": [{"tokens": []}]},
                ],
            }
        )
    )
    message = _error(path)
    assert "3 problem(s)" in message
    assert 'image 0 (a.jpg): needs "filename" and "sentences"' in message
    assert 'image 1 (?): needs "filename"' in message
    assert "image 2 (c.jpg): empty caption" in message


def test_nonexistent_captions_file(tmp_path: Path) -> None:
    """A captions path that is not a file is refused with the path, whatever the format."""
    missing = tmp_path / "nope.csv"
    assert f"captions file not found: {missing}" in _error(missing)
    assert "captions file not found" in _error(tmp_path, format="csv")


def test_non_utf8_text_is_refused_with_a_dataset_error(tmp_path: Path) -> None:
    """A Latin-1 captions file is a DatasetError saying it is not UTF-8, not a UnicodeDecodeError."""
    _image(tmp_path / "a.jpg")
    for name in ("captions.csv", "captions.jsonl"):
        path = tmp_path / name
        text = "image,caption\na.jpg,café\n" if name.endswith(".csv") else '{"image": "a.jpg", "caption": "café"}\n'
        path.write_bytes(text.encode("latin-1"))
        assert "not UTF-8 text" in _error(path)


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    """Every problem is listed in one error, with the count, in file order."""
    _image(tmp_path / "a.jpg")
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\na.jpg,ok\nx.jpg,lost\na.jpg,\ny.jpg,lost too\n")
    message = _error(path)
    assert message.startswith(f"{path}: 3 problem(s):")
    lines = message.splitlines()[1:]
    assert [line.strip().split(":")[0] for line in lines] == ["line 3", "line 4", "line 5"]


def test_more_than_ten_problems_show_the_first_ten_and_count_the_rest(tmp_path: Path) -> None:
    """Thirteen problems: the count says 13, the first ten are shown, then "... and 3 more"."""
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n" + "".join(f"missing{n:02d}.jpg,caption {n}\n" for n in range(13)))
    message = _error(path)
    assert "13 problem(s)" in message
    for n in range(10):
        assert f"line {n + 2}: image not found: {tmp_path / f'missing{n:02d}.jpg'}" in message
    for n in range(10, 13):
        assert f"missing{n:02d}.jpg" not in message
    assert message.rstrip().endswith("... and 3 more")
    path.write_text("image,caption\n" + "".join(f"missing{n:02d}.jpg,caption {n}\n" for n in range(10)))
    message = _error(path)
    assert "10 problem(s)" in message
    assert "... and" not in message
    assert message.rstrip().endswith(str(tmp_path / "missing09.jpg"))


def test_a_missing_image_listed_twice_is_reported_once(tmp_path: Path) -> None:
    """Further rows for an image already found missing add no duplicate problem."""
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\ngone.jpg,one\ngone.jpg,two\n")
    message = _error(path)
    assert "1 problem(s)" in message
    assert "line 2: image not found" in message


# --- skip_missing ----------------------------------------------------------------------------------


def test_skip_missing_drops_missing_images_and_counts_them(tmp_path: Path) -> None:
    """Missing images and all their captions are left out, counted once per image; the rest is renumbered."""
    _image(tmp_path / "a.jpg", 1)
    _image(tmp_path / "c.png", 2)
    path = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image": "gone1.jpg", "caption": "g1"},
            {"image": "a.jpg", "captions": ["a1", "a2"]},
            {"image": "gone2.jpg", "caption": "g2"},
            {"image": "gone1.jpg", "caption": "g1 again"},
            {"image": "c.png", "caption": "c1"},
            {"image": "a.jpg", "caption": "a3"},
        ],
    )
    dataset = load_captions(path, skip_missing=True)
    assert dataset.skipped_missing == 2
    assert dataset.images == (tmp_path / "a.jpg", tmp_path / "c.png")
    assert _pairs(dataset) == [("a.jpg", "a1"), ("a.jpg", "a2"), ("c.png", "c1"), ("a.jpg", "a3")]
    assert dataset.caption_image == (0, 0, 1, 0)
    message = _error(path)
    assert "2 problem(s)" in message
    assert "line 1: image not found" in message
    assert "line 3: image not found" in message


def test_skip_missing_with_every_image_missing_is_still_an_error(tmp_path: Path) -> None:
    """When no listed image exists there is nothing to train or measure on: refused."""
    path = write_jsonl(tmp_path / "captions.jsonl", [{"image": "gone.jpg", "caption": "g"}])
    assert "no captioned image found" in _error(path, skip_missing=True)
