"""The `clipsearch` command line: the outermost layer, over both `retrieval` and `indexer`."""

from __future__ import annotations

from indexer.cli.index import cli, main

__all__ = ["cli", "main"]
