"""The page in a real browser: `create_app` on uvicorn over a library of 60 generated scenes indexed with the
packaged reference model, driven in headless Chromium (Debian's `chromium`, launched by Playwright for Python).

A person's way through it: a text query shows thumbnails of the right pictures (checked against the
generator's record of each scene), a click opens the overlay with the file's details, "more like this" searches
by that picture (left out of its own results), the back button returns, filters narrow the results, a phone's
width never scrolls sideways, a file named like markup shows as text, an uploaded image finds its original,
and the duplicates view marks the best copy. No console errors anywhere. Screenshots go to
`$CLIPSEARCH_ARTIFACTS` (default `<repo>/.artifacts/browser/`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from indexer.pipeline import index_folders
from retrieval.library import Library
from retrieval.model.reference import reference_spec
from retrieval.quality.attributes import AttributeQuery
from retrieval.quality.scene_dataset import generate_dataset
from retrieval.query import text_parts
from tests.imagefactory import EXIF_IFD
from tests.webserver import serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[3]
SCENES, SEED = 60, 12
"""60 scenes from a seed no training split uses; this seed holds 3 purple-square scenes (QUERY)."""
QUERY = AttributeQuery("browser", "purple squares", {"colour": "purple", "shape": "square"})
XSS_NAME = "<img src=x onerror=alert(1)>.png"
CAMERA_FILES = 4
YEARS = (2020, 2023)
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 740}
QUIET = "() => !document.body.classList.contains('loading')"
IMAGES_SHOWN = """() => Array.from(document.images).every(image => {
  const box = image.getBoundingClientRect();
  const visible = box.width > 0 && box.bottom > 0 && box.top < innerHeight;
  return !visible || (image.complete && image.naturalWidth > 0);
})"""
"""Every image in the viewport has loaded (thumbnails are made on their first request)."""


@dataclass
class Scenes:
    library: Path
    roots: dict[int, Path]  # year -> root folder (files dated in that year)
    scene_of: dict[str, dict[str, Any]]  # resolved path -> the generator's scene
    camera_paths: set[str]
    xss_copy: str  # the file named like markup: a PNG copy of `xss_original`
    xss_original: str


def _artifacts() -> Path:
    folder = Path(os.environ.get("CLIPSEARCH_ARTIFACTS") or REPO / ".artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _with_camera(source: Path, target: Path, taken: str) -> None:
    """`source` re-saved as a JPEG whose EXIF names a Canon EOS 80D and the date taken."""
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "EOS 80D"
    exif.get_ifd(EXIF_IFD)[36867] = taken
    with Image.open(source) as image:
        image.convert("RGB").save(target, "JPEG", quality=95, exif=exif.tobytes())


def _photo_roots(
    scenes: Path, captions: Path, base: Path
) -> tuple[dict[int, Path], dict[str, dict[str, Any]], set[str]]:
    """The scenes split over two roots, one per year of YEARS (file times), a few re-saved with a camera."""
    records = [json.loads(line) for line in captions.read_text().splitlines()]
    roots = {year: base / str(year) for year in YEARS}
    scene_of: dict[str, dict[str, Any]] = {}
    cameras: set[str] = set()
    for number, record in enumerate(records):
        year = YEARS[number * len(YEARS) // len(records)]
        target = roots[year] / Path(record["image"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if year == YEARS[-1] and len(cameras) < CAMERA_FILES:
            _with_camera(scenes / record["image"], target, f"{year}:05:0{len(cameras) + 1} 10:00:00")
            cameras.add(str(target.resolve()))
        else:
            shutil.copyfile(scenes / record["image"], target)
        stamp = datetime(year, 6, 1 + number % 28).timestamp()
        os.utime(target, (stamp, stamp))
        scene_of[str(target.resolve())] = record["scene"]
    return roots, scene_of, cameras


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Scenes:
    base = tmp_path_factory.mktemp("browser")
    dataset = generate_dataset(base / "scenes", seed=SEED, sizes={"test": SCENES})
    roots, scene_of, cameras = _photo_roots(dataset.folder, dataset.split_file("test"), base / "photos")
    original = sorted(path for path in scene_of if path not in cameras)[0]
    copy = roots[YEARS[-1]] / XSS_NAME
    with Image.open(original) as image:
        image.save(copy, "PNG")
    scene_of[str(copy.resolve())] = scene_of[original]
    with Library(base / "library", create=True) as library:
        index_folders(library, library.encoder(reference_spec()), [str(root) for root in roots.values()], workers=1)
    return Scenes(base / "library", roots, scene_of, cameras, str(copy.resolve()), original)


@pytest.fixture(scope="module")
def server(scenes: Scenes) -> Iterator[str]:
    with serving(scenes.library, device="cpu", backend="torch") as url:
        yield url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "BROWSER TEST NOT RUN: Playwright for Python is missing. Install it with `pip install -e '.[dev]'` "
            "(never `playwright install`: the test uses the system's chromium)"
        )
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "BROWSER TEST NOT RUN: no `chromium` on PATH. Install Debian's package as root: "
            "`apt-get update && apt-get install -y chromium` (.ci/run does this)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page with what it said: console errors, uncaught exceptions and dialogs (an `alert` is a failure)."""

    page: Any
    url: str
    problems: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # console errors a test provokes (a 400 it asked for)

    def console(self, message: Any) -> None:
        if message.type == "error" and not any(text in message.text for text in self.expected):
            self.problems.append(f"console: {message.text}")

    def search(self, text: str) -> None:
        self.page.fill("#q", text)
        self.page.press("#q", "Enter")
        self.settle()

    def settle(self) -> None:
        self.page.wait_for_function(QUIET)
        self.page.wait_for_load_state("networkidle")

    def paths(self) -> list[str]:
        return [
            str(Path(path).resolve())
            for path in self.page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.path)")
        ]

    def ids(self) -> list[int]:
        return [
            int(value) for value in self.page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.id)")
        ]

    def no_horizontal_scroll(self) -> None:
        widths = self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"

    def screenshot(self, name: str) -> Path:
        path = _artifacts() / f"{name}.png"
        self.page.wait_for_function(IMAGES_SHOWN)
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def tab(chromium: Any, server: str) -> Iterator[Tab]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    opened = Tab(page, server)
    page.on("console", opened.console)
    page.on("pageerror", lambda error: opened.problems.append(f"exception: {error}"))

    def dialog(shown: Any) -> None:
        opened.problems.append(f"dialog: {shown.message}")
        shown.dismiss()

    page.on("dialog", dialog)
    page.goto(server + "/")
    opened.settle()
    yield opened
    context.close()
    assert opened.problems == [], opened.problems


# --- the tests -----------------------------------------------------------------------------------------------


def test_a_text_query_shows_thumbnails_of_the_right_pictures(tab: Tab, scenes: Scenes) -> None:
    tab.search(QUERY.text)
    paths = tab.paths()
    right = [QUERY.matches(scenes.scene_of[path]) for path in paths]
    assert len(paths) >= 2 and right[0] and sum(right[:3]) >= 2, list(zip(paths, right, strict=True))
    assert "q=purple+squares" in tab.page.url
    first = tab.page.locator(".card img").first
    assert first.get_attribute("loading") == "lazy" and first.get_attribute("width") and first.get_attribute("height")
    tab.page.wait_for_function("() => document.querySelector('.card img').naturalWidth > 0")  # the thumbnail loaded
    assert "% match" in tab.page.inner_text(".card .score")
    tab.screenshot("search")


def test_the_overlay_shows_details_and_more_like_this_leaves_the_picture_out(tab: Tab, scenes: Scenes) -> None:
    tab.search(QUERY.text)
    shown, first_path = tab.ids(), tab.paths()[0]
    tab.page.locator(".card .thumb").first.click()
    tab.page.wait_for_selector("#viewer-details dd.path")
    assert str(Path(tab.page.inner_text("#viewer-details dd.path")).resolve()) == first_path
    details = tab.page.inner_text("#viewer-details")
    assert "128 × 128 px" in details and "KB" in details
    tab.screenshot("overlay")
    tab.page.keyboard.press("ArrowRight")
    assert tab.page.inner_text("#viewer-title") == Path(tab.paths()[1]).name
    tab.page.keyboard.press("ArrowLeft")
    tab.page.click("#viewer-similar")
    tab.settle()
    assert tab.page.locator("#viewer").is_hidden()
    assert f"img={shown[0]}" in tab.page.url
    similar = tab.ids()
    assert similar and shown[0] not in similar and similar != shown
    tab.page.go_back()  # one step back: "more like this" took the place of the overlay's own history entry
    tab.settle()
    assert tab.page.input_value("#q") == QUERY.text and tab.ids() == shown
    for close in (lambda: tab.page.keyboard.press("Escape"), tab.page.go_back):  # the back button closes it too
        tab.page.locator(".card .thumb").first.click()
        tab.page.wait_for_selector("#viewer-details dd.path")
        close()
        tab.page.wait_for_selector("#viewer", state="hidden")
        assert tab.page.url.endswith("/?q=purple+squares") and tab.ids() == shown


def test_filters_narrow_the_results(tab: Tab, scenes: Scenes) -> None:
    tab.page.click("#filters summary")
    tab.page.check("#weak")
    tab.search("squares")
    assert len(tab.ids()) > 10
    early = str(scenes.roots[YEARS[0]])
    tab.page.select_option("#within", early)
    tab.settle()
    assert tab.paths() and all(path.startswith(early + os.sep) for path in tab.paths()), tab.paths()
    tab.page.select_option("#within", "")
    tab.page.fill("#after", str(YEARS[-1]))  # a year, as the CLI takes dates: from its first day on
    tab.page.press("#after", "Enter")
    tab.settle()
    late = str(scenes.roots[YEARS[-1]])
    assert tab.paths() and all(path.startswith(late + os.sep) for path in tab.paths()), tab.paths()
    assert f"after={YEARS[-1]}&" in tab.page.url + "&"
    tab.page.fill("#after", "")
    tab.page.select_option("#camera", label="Canon EOS 80D")
    tab.settle()
    assert set(tab.paths()) == scenes.camera_paths
    tab.page.select_option("#sort", "-date")
    tab.settle()
    dates = tab.page.eval_on_selector_all(".card time", "times => times.map(t => t.dateTime)")
    assert len(dates) == CAMERA_FILES and dates == sorted(dates, reverse=True), dates
    assert "camera=" in tab.page.url and "sort=-date" in tab.page.url
    tab.screenshot("filters")


def test_more_results_come_page_by_page(tab: Tab, scenes: Scenes) -> None:
    """With weak matches shown every image matches; the first page holds 48, scrolling down fetches the rest by
    `offset`, with no image twice."""
    tab.page.goto(tab.url + "/?q=squares&weak=1")
    tab.settle()
    assert len(tab.ids()) == 48 and tab.page.locator("#more").is_visible()
    tab.page.locator("#sentinel").scroll_into_view_if_needed()
    tab.page.wait_for_function("() => document.querySelectorAll('.card').length > 48")
    tab.settle()
    ids = tab.ids()
    assert len(ids) == len(set(ids)) == len(scenes.scene_of)
    assert tab.page.locator("#more").is_hidden()


def test_no_matches_says_weak_matches_are_hidden(tab: Tab) -> None:
    tab.search("asdfghjkl")
    assert tab.ids() == []
    assert "Weak matches are hidden" in tab.page.inner_text("#message")
    tab.page.click("#message button")
    tab.settle()
    assert "weak=1" in tab.page.url and tab.ids()
    assert "61 images" in tab.page.inner_text("#status")


def test_an_error_shows_the_api_message(tab: Tab) -> None:
    tab.expected.append("400 (Bad Request)")
    tab.page.goto(tab.url + "/?q=squares&after=someday")
    tab.settle()
    message = tab.page.inner_text("#message")
    assert "`after`" in message and "someday" in message, message
    assert tab.page.locator("#message.error").is_visible() and tab.ids() == []


def test_the_status_corner_says_indexing_while_the_served_generation_is_behind(tab: Tab) -> None:
    served = tab.page.evaluate("async () => (await fetch('/api/status')).json()")
    assert served["generation"] == served["store_generation"]
    behind = served | {"store_generation": served["generation"] + 1}
    notes = tab.page.evaluate(
        "async (statuses) => { const status = await import('/static/status.js');"
        " return statuses.map(one => status.describe(one).note); }",
        [served, behind],
    )
    assert notes == ["", "indexing…"]


def test_a_phone_never_scrolls_sideways(tab: Tab) -> None:
    tab.page.set_viewport_size(PHONE)
    tab.search(QUERY.text)
    tab.page.click("#filters summary")
    tab.no_horizontal_scroll()
    tab.screenshot("phone")
    tab.page.locator(".card .thumb").first.click()
    tab.page.wait_for_selector("#viewer-details dd.path")
    tab.no_horizontal_scroll()
    tab.screenshot("phone-overlay")


def test_a_file_named_like_markup_shows_as_text(tab: Tab, scenes: Scenes) -> None:
    """The PNG copy named `<img src=x onerror=alert(1)>.png` is a near-duplicate of its original: its name is
    text in the duplicates view and the overlay, never an element (the tab fails on any alert)."""
    tab.page.goto(tab.url + "/?view=duplicates")
    tab.settle()
    names = tab.page.eval_on_selector_all(".member .name", "names => names.map(n => n.textContent)")
    assert XSS_NAME in names
    assert tab.page.locator(".member.best").count() >= 1 and "reclaimable" in tab.page.inner_text("#summary")
    tab.page.locator(".member", has_text=XSS_NAME).locator(".thumb").click()
    tab.page.wait_for_selector("#viewer-details dd.path")
    assert tab.page.inner_text("#viewer-title") == XSS_NAME
    assert tab.page.inner_text("#viewer-details dd.path").endswith(XSS_NAME)
    assert tab.page.locator('img[src="x"]').count() == 0
    tab.screenshot("duplicates")
    tab.page.keyboard.press("Escape")
    tab.page.wait_for_selector("#viewer", state="hidden")
    tab.page.select_option("#duplicates-within", str(scenes.roots[YEARS[0]]))  # the copy lies under the other
    tab.page.click("#duplicates-go")
    tab.settle()
    assert "within=" in tab.page.url
    assert XSS_NAME not in tab.page.eval_on_selector_all(".member .name", "names => names.map(n => n.textContent)")


def test_an_uploaded_image_finds_its_original(tab: Tab, scenes: Scenes) -> None:
    with tab.page.expect_file_chooser() as chooser:
        tab.page.click("#pick-button")
    chooser.value.set_files(scenes.xss_original)
    tab.page.wait_for_selector("#parts .chip")
    tab.settle()
    assert "up=" in tab.page.url
    assert tab.paths()[:2] and set(tab.paths()[:2]) == {scenes.xss_original, scenes.xss_copy}
    assert "similarity" in tab.page.inner_text(".card .score")
    names = tab.page.eval_on_selector_all(".card .name", "names => names.map(n => n.textContent)")
    assert XSS_NAME in names[:2]  # the file named like markup, as text in the grid too
    assert tab.page.locator('img[src="x"]').count() == 0
    tab.screenshot("upload")


@pytest.mark.parametrize(
    ("text", "without"),
    [
        ("red car", ""),
        ("2:beach 1:sunset -1:people", ""),
        ('0.5:"at night" train', "people, text"),
        ("10:30 train ratio 16:9", ""),
        ("\\2:beach .5:sea", "-"),
    ],
)
def test_the_page_weighs_words_as_the_cli_does(tab: Tab, text: str, without: str) -> None:
    """The search box's words become the parts `retrieval.query.text_parts` makes of the same words (the CLI's
    rule), and each comma-separated item of "without" a part of weight -1, like `--not`."""
    words, parts = tab.page.evaluate(
        "async ([text, without]) => { const query = await import('/static/query.js');"
        " return [query.words(text), query.textParts(text, without)]; }",
        [text, without],
    )
    negated = [item.strip() for item in without.split(",") if item.strip()]
    expected = [{"text": part.text, "weight": part.weight} for part in text_parts(words, negated)]
    assert [part | {"weight": float(part["weight"])} for part in parts] == expected
    if '"' in text:
        assert words[0] == "0.5:at night"


def test_a_dropped_image_is_a_part_that_can_be_turned_into_a_not(tab: Tab, scenes: Scenes) -> None:
    """An image dropped on the page (here the original of a result, fetched from the server) is uploaded and
    searched; its chip's toggle makes it a part of weight -1, which the URL keeps."""
    tab.search(QUERY.text)
    first = tab.ids()[0]
    tab.page.evaluate(
        """async (url) => {
          const blob = await (await fetch(url)).blob();
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "dropped.jpg", {type: blob.type}));
          document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        f"/api/images/{first}",
    )
    tab.page.wait_for_selector("#parts .chip")
    tab.settle()
    liked = tab.ids()
    assert "up=" in tab.page.url and first in liked[:2]  # the text and the image together: it ranks at the top
    tab.page.click("#parts .chip-weight")
    tab.settle()
    assert "up=-" in tab.page.url and tab.page.inner_text("#parts .chip-weight") == "not like"
    assert first not in tab.ids()[:3] and tab.ids() != liked
