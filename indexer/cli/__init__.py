"""The `clipsearch` command line: the outermost layer, over both `retrieval` and `indexer`.

Every command is registered here, in one list; the modules that define them import library code inside
the commands, so that `--help` and `--version` load no model code.
"""

from __future__ import annotations

from indexer.cli.app import cli, main
from indexer.cli.bench import bench
from indexer.cli.demo import demo
from indexer.cli.duplicates import duplicates
from indexer.cli.export import export
from indexer.cli.index import index
from indexer.cli.info import info
from indexer.cli.roots import forget, roots
from indexer.cli.search import search, similar
from indexer.cli.serve import serve
from indexer.cli.train import generate_dataset, train
from indexer.cli.watch import watch

COMMANDS = [
    index,
    search,
    similar,
    export,
    duplicates,
    roots,
    forget,
    watch,
    serve,
    info,
    train,
    generate_dataset,
    bench,
    demo,
]
for _command in COMMANDS:
    cli.add_command(_command)

__all__ = ["COMMANDS", "cli", "main"]
