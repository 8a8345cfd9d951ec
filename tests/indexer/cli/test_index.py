"""`clipsearch index`'s summary printing: paths that are not valid UTF-8 come out as their bytes."""

from __future__ import annotations

import os

from click.testing import CliRunner

from indexer.cli.index import _print_report
from indexer.pipeline import IndexReport


def test_summary_prints_non_utf8_roots_and_skipped_files_as_their_bytes() -> None:
    """A root and a skipped file named with the byte \\xff (surrogate escapes in Python) print as those bytes
    on stdout and stderr, with no UnicodeEncodeError."""
    root, broken = os.fsdecode(b"/photos/r\xff"), os.fsdecode(b"/photos/r\xff/zz\xff.jpg")
    report = IndexReport(roots=[root], scanned=2, embedded=1, failed=1, failures=[(broken, "not an image")])
    report.unlisted.append((os.fsdecode(b"/photos/r\xff/locked\xfe"), "Permission denied"))
    with CliRunner().isolation() as (out, err, _mixed):
        _print_report(report)
        printed, warned = out.getvalue(), err.getvalue()
    assert printed.startswith(b"indexed /photos/r\xff: 2 images found, 1 embedded")
    assert b"  skipped /photos/r\xff/zz\xff.jpg: not an image\n" in warned
    assert b"  could not list /photos/r\xff/locked\xfe: Permission denied (its stored images were kept)\n" in warned
