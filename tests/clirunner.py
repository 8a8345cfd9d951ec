"""Running the `clipsearch` CLI in-process for tests, and checking that a failure is a clean one."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner, Result

from indexer.cli import cli


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, prog_name="clipsearch")


def assert_clean_failure(result: Result, code: int = 1) -> str:
    """The command failed with `code` through click (an `Error:` message, no traceback); returns its output."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    return result.output


def leaf_commands(command: click.Command, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every runnable command under `command` (a group's subcommands, recursively), by the words naming it."""
    if not isinstance(command, click.Group):
        return {path: command}
    return {
        leaf: found
        for name, sub in command.commands.items()
        for leaf, found in leaf_commands(sub, (*path, name)).items()
    }
