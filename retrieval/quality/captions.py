"""Captioned image datasets: what users bring to train on and to measure recall with.

Formats (`load_captions(path, format=...)`, "auto" picks by suffix and content):
- csv: a header with an image column (`image`, `filepath`, `file` or `path`) and a caption column
  (`caption` or `text`); one row per caption, so an image may appear on several rows; optional `split`.
- jsonl: one object per line, `{"image": ..., "caption": "..."}` or `{"image": ..., "captions": [...]}`;
  optional `"split"`. Extra keys are ignored.
- coco-karpathy / flickr30k-karpathy: Karpathy's split JSON (`dataset_coco.json`, `dataset_flickr30k.json`),
  `{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw": ...}]}]}`; `--split` picks one
  ("train" includes COCO's "restval", as in Karpathy's training).
Image paths are relative to `images_root` (default: the captions file's folder). Every problem found is
reported at once, with line numbers, rather than the first one only.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from retrieval.errors import DatasetError

FORMATS = ("auto", "csv", "jsonl", "coco-karpathy", "flickr30k-karpathy")
_IMAGE_COLUMNS = ("image", "filepath", "file", "path")
_CAPTION_COLUMNS = ("caption", "text")
_MAX_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class CaptionedDataset:
    """Images with one or more captions each. `caption_image[j]` is the index of caption j's image."""

    source: Path
    images: tuple[Path, ...]
    captions: tuple[str, ...]
    caption_image: tuple[int, ...]
    skipped_missing: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def captions_of(self, image_index: int) -> list[str]:
        return [text for text, owner in zip(self.captions, self.caption_image, strict=True) if owner == image_index]

    def head(self, count: int) -> CaptionedDataset:
        """The first `count` images with their captions (a quick validation subset)."""
        if count >= len(self.images):
            return self
        kept = [(text, owner) for text, owner in zip(self.captions, self.caption_image, strict=True) if owner < count]
        return CaptionedDataset(
            self.source,
            self.images[:count],
            tuple(text for text, _ in kept),
            tuple(owner for _, owner in kept),
        )


@dataclass(frozen=True)
class _Entry:
    where: str  # "line 12" / "image 5": for messages
    image: str
    captions: list[str]


def load_captions(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    format: str = "auto",
    split: str | None = None,
    skip_missing: bool = False,
) -> CaptionedDataset:
    """Read and check a captions file; raise `DatasetError` listing every problem found.

    `skip_missing` drops images whose file does not exist (counted in `skipped_missing`) instead of
    refusing the dataset; empty captions and malformed lines are always errors.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise DatasetError(f"captions file not found: {source}")
    chosen = _detect_format(source) if format == "auto" else format
    if chosen not in FORMATS[1:]:
        raise DatasetError(f"unknown captions format '{format}'; choose one of {', '.join(FORMATS)}")
    root = Path(images_root).expanduser() if images_root is not None else source.parent
    problems: list[str] = []
    readers = {"csv": _read_csv, "jsonl": _read_jsonl}
    try:
        if chosen in readers:
            entries = list(readers[chosen](source, split, problems))
        else:
            entries = list(_read_karpathy(source, chosen, split or "test", problems))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{source}: not UTF-8 text ({exc})") from exc
    return _assemble(source, root, entries, problems, skip_missing)


def _detect_format(source: Path) -> str:
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        try:
            dataset = json.loads(source.read_text()).get("dataset", "")
        except (ValueError, AttributeError) as exc:
            raise DatasetError(f"{source}: not a Karpathy split JSON object ({exc})") from exc
        if "flickr" in str(dataset).lower():
            return "flickr30k-karpathy"
        return "coco-karpathy"
    raise DatasetError(
        f"cannot tell the format of {source.name} from its suffix; pass `format` with one of {', '.join(FORMATS[1:])}",
        parameters=("format",),
    )


def _read_csv(source: Path, split: str | None, problems: list[str]) -> Iterator[_Entry]:
    with open(source, newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        delimiter = "\t" if source.suffix.lower() == ".tsv" or ("\t" in sample and "," not in sample) else ","
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [name.strip().lower() for name in reader.fieldnames or []]
        image_col = next((name for name in _IMAGE_COLUMNS if name in columns), None)
        caption_col = next((name for name in _CAPTION_COLUMNS if name in columns), None)
        if image_col is None or caption_col is None:
            raise DatasetError(
                f"{source}: the header must name an image column ({', '.join(_IMAGE_COLUMNS)}) and a caption "
                f"column ({', '.join(_CAPTION_COLUMNS)}); found: {', '.join(columns) or 'no header'}"
            )
        reader.fieldnames = columns
        for row in reader:
            line = reader.line_num  # the record's last physical line: right past blank lines and quoted newlines
            if split is not None and (row.get("split") or "").strip() != split:
                continue
            yield _Entry(f"line {line}", (row.get(image_col) or "").strip(), [row.get(caption_col) or ""])


def _read_jsonl(source: Path, split: str | None, problems: list[str]) -> Iterator[_Entry]:
    with open(source, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"line {line_number}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                problems.append(f"{where}: not valid JSON ({exc})")
                continue
            if not isinstance(record, dict):
                problems.append(f"{where}: expected a JSON object")
                continue
            if split is not None and record.get("split") != split:
                continue
            captions = record.get("captions", [record["caption"]] if "caption" in record else None)
            if not isinstance(captions, list) or not all(isinstance(text, str) for text in captions):
                problems.append(f'{where}: needs "caption" (a string) or "captions" (a list of strings)')
                continue
            image = record.get("image")
            if not isinstance(image, str):
                problems.append(f'{where}: needs "image" (a path string)')
                continue
            yield _Entry(where, image, captions)


def _read_karpathy(source: Path, format: str, split: str, problems: list[str]) -> Iterator[_Entry]:
    try:
        data = json.loads(source.read_text())
        images = data["images"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f'{source}: not a Karpathy split JSON (expected {{"images": [...]}}): {exc}') from exc
    if not isinstance(images, list):
        raise DatasetError(f'{source}: not a Karpathy split JSON ("images" must be a list)')
    splits = {"train", "restval"} if split == "train" and format == "coco-karpathy" else {split}
    seen_splits: set[str] = set()
    for number, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"image {number}: expected a JSON object")
            continue
        seen_splits.add(str(image.get("split")))
        if image.get("split") not in splits:
            continue
        where = f"image {number} ({image.get('filename', '?')})"
        sentences = image.get("sentences")
        if (
            not isinstance(image.get("filename"), str)
            or not isinstance(sentences, list)
            or not all(isinstance(item, dict) for item in sentences)
        ):
            problems.append(f'{where}: needs "filename" and "sentences" (a list of {{"raw": ...}} objects)')
            continue
        relative = image["filename"]
        if format == "coco-karpathy" and image.get("filepath"):
            relative = f"{image['filepath']}/{relative}"
        yield _Entry(where, relative, [str(sentence.get("raw", "")) for sentence in image["sentences"]])
    if not problems and not any(name in seen_splits for name in splits):
        raise DatasetError(f"{source}: no image in split '{split}'; its splits are {', '.join(sorted(seen_splits))}")


def _assemble(
    source: Path, root: Path, entries: Iterable[_Entry], problems: list[str], skip_missing: bool
) -> CaptionedDataset:
    index_of: dict[Path, int] = {}
    captions: list[str] = []
    owners: list[int] = []
    missing: set[Path] = set()
    for entry in entries:
        if not entry.image:
            problems.append(f"{entry.where}: empty image path")
            continue
        empty = [text for text in entry.captions if not text.strip()]
        if empty or not entry.captions:
            problems.append(f"{entry.where}: empty caption for {entry.image}")
            continue
        path = Path(os.path.normpath(root / entry.image.strip()))  # one image, however its path is spelled
        if path in missing or (path not in index_of and not path.is_file()):
            if path not in missing and not skip_missing:
                problems.append(f"{entry.where}: image not found: {path}")
            missing.add(path)
            continue
        owner = index_of.setdefault(path, len(index_of))
        for text in entry.captions:
            captions.append(" ".join(text.split()))
            owners.append(owner)
    if problems:
        shown = "\n  ".join(problems[:_MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - _MAX_PROBLEMS_SHOWN} more" if len(problems) > _MAX_PROBLEMS_SHOWN else ""
        raise DatasetError(f"{source}: {len(problems)} problem(s):\n  {shown}{more}")
    if not index_of:
        raise DatasetError(f"{source}: no captioned image found")
    return CaptionedDataset(source, tuple(index_of), tuple(captions), tuple(owners), skipped_missing=len(missing))
