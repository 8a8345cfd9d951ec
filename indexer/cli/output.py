"""What commands share in printing: the one progress bar, JSON lines, lines that hold paths, and the recall
table.

Paths that are not valid UTF-8 reach Python as str with surrogate escapes (`'zz\\udcff.jpg'` for the bytes
`zz\\xff.jpg`). Lines holding paths are written as the file system's bytes (`os.fsencode`), so they print
losslessly and never raise UnicodeEncodeError; JSON keeps them as `\\udcff` escapes, which `json.loads` turns
back into the same str and `os.fsencode` into the same bytes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from indexer.bench_recall import RecallBenchReport
    from retrieval.quality.recall import Recall


class ProgressBar:
    """A click progress bar on stderr (position, ETA, a note), drawn from the first `update`; off when
    `quiet` or when stderr is not a terminal. `update(done, total, note)` serves the library's
    `ProgressCallback` (done, total) and training's progress events alike."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.enabled = not quiet and sys.stderr.isatty()
        self.started = time.perf_counter()
        self._bar: Any = None  # click's bar, made when the total is known

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: int, total: int, note: str = "") -> None:
        if self._bar is None:
            self._bar = click.progressbar(
                length=total,
                label=self.label,
                show_pos=True,
                show_eta=True,
                file=sys.stderr,
                item_show_func=lambda item: item,
            )
            self._bar.__enter__()
        self._bar.update(done - self._bar.pos, current_item=note)

    def per_second(self, done: int) -> float:
        """`done` units over the time since the bar was made."""
        return done / max(time.perf_counter() - self.started, 1e-9)


def echo_json(data: Any) -> None:
    """One JSON object on a line, ASCII only: a non-UTF-8 path's surrogates stay `\\udcXX` escapes."""
    click.echo(json.dumps(data, ensure_ascii=True))


def echo_fs(text: str, *, end: bytes = b"\n", err: bool = False) -> None:
    """`text` (a line that may hold paths) as the file system's bytes, followed by `end` (b"\\0" for `-0`)."""
    click.echo(os.fsencode(text) + end, nl=False, err=err)


def _recall_rows(label: str, recall: Recall) -> list[str]:
    return [
        f"{label + ' text->image':<28}" + "".join(f"{v:>8.2f}" for v in recall.text_to_image.values()),
        f"{label + ' image->text':<28}" + "".join(f"{v:>8.2f}" for v in recall.image_to_text.values()),
    ]


def print_recall(report: RecallBenchReport) -> None:
    """The recall table of `bench recall` (and of the demo)."""
    from retrieval.quality.recall import Recall

    click.echo(f"dataset: {report.dataset} ({report.images} images, {report.captions} captions)")
    click.echo(f"model:   {report.model}")
    click.echo(f"{'recall (%)':<28}" + "".join(f"{'R@' + str(k):>8}" for k in report.ks))
    for row in _recall_rows("index", report.index):
        click.echo(row)
    if report.index_matches_exact:
        click.echo("exact search (numpy) over the same vectors gives the same numbers")
    else:
        for row in _recall_rows("exact", report.exact):
            click.echo(row)
    if report.ann is not None:
        ann = Recall.from_json(report.ann["recall"])
        for row in _recall_rows(report.ann["factory"], ann):
            click.echo(row)
        overlap = report.ann["overlap_with_exact"]
        click.echo(
            f"{report.ann['factory']} finds of the exact top-k: "
            + ", ".join(f"{key} {v['text_to_image']:.1f}% / {v['image_to_text']:.1f}%" for key, v in overlap.items())
            + " (text->image / image->text)"
        )
    if report.unreadable:
        click.echo(f"{len(report.unreadable)} unreadable image(s) left out, e.g. {report.unreadable[0][0]}", err=True)
    click.echo("seconds: " + ", ".join(f"{key} {value:.1f}" for key, value in report.seconds.items()))
