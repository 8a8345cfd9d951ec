"""Turns folders of images into the library's rows and vectors (imports `retrieval`, never the reverse).

The public names load from their modules on first use (PEP 562), so that the CLI's `--help` imports no
model code through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval import lazy_exports

if TYPE_CHECKING:  # what type checkers see; `as` marks a re-export
    from indexer.pipeline import IndexReport as IndexReport
    from indexer.pipeline import index_folders as index_folders
    from indexer.scan import ScanOptions as ScanOptions

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, {"indexer.pipeline": ("IndexReport", "index_folders"), "indexer.scan": ("ScanOptions",)}
)
