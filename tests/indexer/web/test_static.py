"""The page's files (indexer/web/static) read as text: what the browser test cannot see on every run.

Data from the API reaches the DOM only as text (no HTML parsing of any string), and the page loads nothing from
elsewhere (it must work offline): no absolute URL in any file, and every file a page or module names exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[3] / "indexer" / "web" / "static"
SCRIPTS = sorted(STATIC.glob("*.js"))
ALL_FILES = sorted(path for path in STATIC.iterdir() if path.suffix in {".html", ".js", ".css"})
HTML_SINKS = re.compile(r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval|new Function)\b")
ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
IMPORT = re.compile(r"""from\s+["'](\./[^"']+)["']""")
LINKED = re.compile(r"""(?:src|href)="/static/([^"]+)\"""")


def test_the_page_has_its_files() -> None:
    assert {"index.html", "app.js", "style.css"} <= {path.name for path in ALL_FILES}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_no_script_parses_strings_as_html(script: Path) -> None:
    assert HTML_SINKS.findall(script.read_text()) == []


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda path: path.name)
def test_nothing_is_loaded_from_elsewhere(path: Path) -> None:
    assert [match.group(0) for match in ABSOLUTE_URL.finditer(path.read_text())] == []


def test_every_file_named_exists() -> None:
    named = LINKED.findall((STATIC / "index.html").read_text())
    for script in SCRIPTS:
        named += [name.removeprefix("./") for name in IMPORT.findall(script.read_text())]
    assert named and all((STATIC / name).is_file() for name in named), named


def test_the_page_offers_the_library_default_duplicate_threshold() -> None:
    """The page's duplicates threshold (the box and the value the URL leaves out) is the library's default,
    which a retrained reference model may move (benchmarks/duplicates.py)."""
    from retrieval.config import DEFAULT_DUPLICATE_THRESHOLD

    default = repr(DEFAULT_DUPLICATE_THRESHOLD)
    assert f'export const DEFAULT_THRESHOLD = "{default}";' in (STATIC / "query.js").read_text()
    box = re.search(r'<input id="threshold"[^>]*>', (STATIC / "index.html").read_text())
    assert box is not None and f'value="{default}"' in box.group(0)
