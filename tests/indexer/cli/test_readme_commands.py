"""The README documents every command the CLI registers, each with an example, and every command's --help
shows one: a new command cannot land undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from indexer.cli import COMMANDS

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def _leaves(command: click.Command, prefix: str = "clipsearch") -> list[tuple[str, click.Command]]:
    name = f"{prefix} {command.name}"
    if isinstance(command, click.Group):
        return [leaf for sub in command.commands.values() for leaf in _leaves(sub, name)]
    return [(name, command)]


LEAVES = [leaf for command in COMMANDS for leaf in _leaves(command)]


@pytest.mark.parametrize(("name", "command"), LEAVES, ids=[name for name, _ in LEAVES])
def test_each_command_has_a_readme_section_with_an_example_and_help_with_one(name: str, command: click.Command) -> None:
    heading = re.search(rf"^###+ `{re.escape(name)}[ `]", README, flags=re.M)
    assert heading, f"README has no section for {name}"
    section = README[heading.end() :].split("\n### ", 1)[0]
    assert f"{name} " in section, f"README's section for {name} shows no example of it"
    assert "Example" in (command.help or ""), f"{name} --help shows no example"
