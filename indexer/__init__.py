"""Turns folders of images into the library's rows and vectors (imports `retrieval`, never the reverse)."""

from __future__ import annotations

from indexer.pipeline import IndexReport, index_folders
from indexer.scan import ScanOptions

__all__ = ["IndexReport", "ScanOptions", "index_folders"]
