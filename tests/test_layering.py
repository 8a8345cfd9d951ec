"""The architecture's rules, checked on the source itself: `retrieval` never imports `indexer`, and the
library names Python parameters in its messages, never CLI flags (the CLI edge adds those)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _modules(package: str, *, skip: str | None = None) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if skip is None or skip not in path.relative_to(ROOT).parts:
            yield path


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _message_strings(path: Path) -> Iterator[tuple[int, str]]:
    """The string constants inside `raise` statements and `warnings.warn` calls."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        is_warning = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn"
        if isinstance(node, ast.Raise) or is_warning:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    yield inner.lineno, inner.value


def _helper_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants of functions whose result becomes a message (`*_help`, `fix = ...`)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        named_help = isinstance(node, ast.FunctionDef) and node.name.endswith("_help")
        fix = isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "fix" for t in node.targets)
        if named_help or fix:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and inner is not node:
                    yield inner.lineno, inner.value


def test_retrieval_never_imports_indexer() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("retrieval")
        for name in _imported(path)
        if name == "indexer" or name.startswith("indexer.")
    ]
    assert offenders == []


@pytest.mark.parametrize("package", ["retrieval", "indexer"])
def test_library_messages_name_parameters_not_flags(package: str) -> None:
    """Errors and warnings raised outside `indexer/cli` say `pretrained`, not --pretrained."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _modules(package, skip="cli")
        for line, text in [*_message_strings(path), *_helper_strings(path)]
        if FLAG.search(text)
    ]
    assert offenders == []
