"""`indexer.watch`: when pending paths are applied (`Pending`, driven by hand), and a real `Watcher` (watchdog's
inotify observer, the tiny model, a real library) in a thread: adds, changes, moves, deletes, a file written
slowly, a manual index and searches while it watches, and a clean stop."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from indexer.pipeline import index_folders
from indexer.watch import Pending, WatchBatch, Watcher, WatchSettings
from retrieval.library import Library
from retrieval.model.encoder import Encoder
from retrieval.search import Searcher
from tests import imagefactory as factory
from tests.libcheck import assert_index_matches_store, stored_rows

QUIET = 0.3
SETTINGS = WatchSettings(quiet=QUIET, max_delay=2.0, tick=0.05)

# --- Pending, by hand ---------------------------------------------------------------------------------------


def test_a_burst_is_taken_once_it_has_been_quiet(tmp_path: Path) -> None:
    """Nothing is due while events keep coming; after `quiet` seconds without one, all settled paths at once."""
    pending = Pending(WatchSettings(quiet=1.0, max_delay=10.0))
    files = [factory.pattern_png(tmp_path / f"f{i}.png", seed=i) for i in range(3)]
    for offset, path in enumerate(files):
        pending.add(str(tmp_path), str(path), now=100.0 + 0.5 * offset)
    assert pending.take(now=101.9) == {}  # the last event was 0.9 s ago
    assert pending.take(now=102.0) == {str(tmp_path): sorted(str(p) for p in files)}
    assert len(pending) == 0 and pending.take(now=200.0) == {}


def test_a_steady_stream_is_applied_every_max_delay_taking_only_what_settled(tmp_path: Path) -> None:
    pending = Pending(WatchSettings(quiet=1.0, max_delay=3.0))
    old, fresh = tmp_path / "old.png", tmp_path / "fresh.png"
    factory.pattern_png(old, seed=1)
    factory.pattern_png(fresh, seed=2)
    pending.add(str(tmp_path), str(old), now=100.0)
    pending.add(str(tmp_path), str(fresh), now=102.8)
    assert pending.take(now=102.9) == {}  # neither quiet nor max_delay
    assert pending.take(now=103.0) == {str(tmp_path): [str(old)]}  # max_delay: old settled, fresh did not
    assert pending.take(now=103.8) == {str(tmp_path): [str(fresh)]}


def test_a_file_that_changed_since_its_event_waits_for_another_quiet_period(tmp_path: Path) -> None:
    """The size/mtime at the last event differs from the file now: it is still being written."""
    pending = Pending(WatchSettings(quiet=1.0, max_delay=10.0))
    path = tmp_path / "growing.png"
    path.write_bytes(b"\x89PNG")
    pending.add(str(tmp_path), str(path), now=100.0)
    with path.open("ab") as handle:
        handle.write(b"more bytes")
    assert pending.take(now=105.0) == {}
    assert pending.take(now=106.0) == {str(tmp_path): [str(path)]}


def test_the_two_paths_of_a_move_go_together(tmp_path: Path) -> None:
    """A move's old path (gone) waits for its new one to settle, so the batch can reuse the vector."""
    pending = Pending(WatchSettings(quiet=1.0, max_delay=10.0))
    old, new = tmp_path / "a.png", tmp_path / "b.png"
    new.write_bytes(b"\x89PNG")
    pending.add(str(tmp_path), str(new), now=100.0, partner=str(old))
    pending.add(str(tmp_path), str(old), now=100.0, partner=str(new))
    with new.open("ab") as handle:
        handle.write(b"x")
    assert pending.take(now=101.0) == {}  # old is settled (gone), new is not: neither goes
    assert pending.take(now=102.0) == {str(tmp_path): sorted([str(old), str(new)])}


def test_a_path_whose_move_partner_is_no_longer_pending_goes_alone(tmp_path: Path) -> None:
    """The partner was applied already (or put back without its pair): the other path does not wait for it."""
    pending = Pending(WatchSettings(quiet=1.0, max_delay=10.0))
    pending.add(str(tmp_path), str(tmp_path / "old.png"), now=100.0, partner=str(tmp_path / "taken.png"))
    assert pending.take(now=101.0) == {str(tmp_path): [str(tmp_path / "old.png")]}


# --- a real watcher ------------------------------------------------------------------------------------------


class Watching:
    """A `Watcher` running in a thread, and the batches it applied."""

    def __init__(self, watcher: Watcher, batches: list[WatchBatch]) -> None:
        self.watcher, self.batches = watcher, batches

    def until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until `condition()` holds and the watcher is idle (nothing pending, no batch running)."""
        deadline = time.monotonic() + timeout
        while not (condition() and self.watcher.idle):
            assert time.monotonic() < deadline, f"not seen within {timeout}s; batches: {self.batches}"
            time.sleep(0.05)

    def settle(self) -> None:
        """Wait until the watcher stays idle for longer than watchdog's own event delay (0.5 s) plus `quiet`."""
        for _ in range(3):
            self.until(lambda: True)
            time.sleep(0.6 + QUIET)
            if self.watcher.idle:
                return
        pytest.fail("the watcher did not settle")


@pytest.fixture
def watching(library: Library, tiny_encoder: Encoder, photos: Path) -> Iterator[Watching]:
    batches: list[WatchBatch] = []
    watcher = Watcher(library, tiny_encoder, [str(photos)], settings=SETTINGS, workers=1, on_batch=batches.append)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    assert watcher.ready.wait(60), "the catch-up run did not finish"
    yield Watching(watcher, batches)
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the watcher did not stop"


def _paths(library: Library) -> set[str]:
    return set(stored_rows(library))


def _searchable(library: Library, tiny_encoder: Encoder, path: Path) -> bool:
    """A fresh Searcher (the public API, reading the FAISS file) finds `path` by its own image."""
    results = Searcher(library, tiny_encoder, gpu="never").search_image(path, k=1, include_self=True)
    return bool(results) and results[0].path == str(path)


def test_adds_changes_moves_and_deletes_reach_the_library(
    watching: Watching, library: Library, tiny_encoder: Encoder, photos: Path
) -> None:
    assert watching.batches[0].catch_up and watching.batches[0].report.embedded == 13

    added = factory.pattern_png(photos / "new.png", seed=90)
    watching.until(lambda: str(added) in _paths(library))
    assert _searchable(library, tiny_encoder, added)

    before = stored_rows(library)[str(added)]["vector"]
    factory.pattern_png(added, seed=91, size=(48, 40))  # changed content
    watching.until(lambda: stored_rows(library)[str(added)]["width"] == 48)
    assert stored_rows(library)[str(added)]["vector"] != before and _searchable(library, tiny_encoder, added)

    moved = photos / "trip" / "renamed.png"
    os.rename(added, moved)
    watching.until(lambda: str(moved) in _paths(library) and str(added) not in _paths(library))
    assert any(b.report.moved == 1 and b.report.embedded == 0 for b in watching.batches)  # no re-embedding

    (photos / "img00.png").unlink()
    watching.until(lambda: str(photos / "img00.png") not in _paths(library))
    watching.settle()
    assert_index_matches_store(library)


@pytest.mark.slow
def test_folders_moved_and_deleted_as_a_whole(watching: Watching, library: Library, photos: Path) -> None:
    """A moved folder keeps every vector (moves, nothing embedded); a deleted one is forgotten whole."""
    shutil.move(str(photos / "trip"), str(photos / "holiday"))
    expected = {str(photos / "holiday" / name) for name in ("camera.jpg", "img10.png", "img11.png")}
    watching.until(lambda: expected <= _paths(library) and not any("/trip/" in p for p in _paths(library)))
    after_catch_up = watching.batches[1:]
    moved, embedded = sum(b.report.moved for b in after_catch_up), sum(b.report.embedded for b in after_catch_up)
    assert (moved, embedded) == (3, 0), [(b.paths, b.report) for b in after_catch_up]

    shutil.rmtree(photos / "holiday")
    watching.until(lambda: not expected & _paths(library))
    assert len(_paths(library)) == 10
    watching.settle()
    assert_index_matches_store(library)


@pytest.mark.slow
def test_a_file_written_slowly_is_indexed_once_and_whole(
    watching: Watching, library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """Written in 8 chunks with pauses shorter than `quiet`: one batch embeds it, complete, and no batch
    recorded it as unreadable."""
    source = factory.large_jpeg(tmp_path / "source.jpg", size=(400, 300))
    data = source.read_bytes()
    target = photos / "slow.jpg"
    with target.open("wb") as handle:
        for start in range(0, len(data), len(data) // 8 + 1):
            handle.write(data[start : start + len(data) // 8 + 1])
            handle.flush()
            time.sleep(QUIET / 3)
    watching.until(lambda: str(target) in _paths(library))
    time.sleep(3 * QUIET)  # any second batch would have come by now
    later = watching.batches[1:]
    assert sum(b.report.embedded for b in later) == 1 and sum(b.report.failed for b in later) == 0
    row = stored_rows(library)[str(target)]
    assert (row["width"], row["height"], row["size"], row["error"]) == (400, 300, len(data), None)
    assert _searchable(library, tiny_encoder, target)


@pytest.mark.slow
def test_a_manual_index_and_searches_run_while_it_watches(
    watching: Watching, library: Library, tiny_encoder: Encoder, photos: Path, tmp_path: Path
) -> None:
    """The writer lock is held only during a batch: an index run into the same library goes through."""
    other = tmp_path / "other"
    factory.pattern_png(other / "o.png", seed=70)
    time.sleep(2 * QUIET)
    with Library(library.directory) as second:  # another handle, as another process would have
        report = index_folders(second, tiny_encoder, [str(other)], workers=1)
    assert report.embedded == 1
    assert _searchable(library, tiny_encoder, other / "o.png")
    added = factory.pattern_png(photos / "during.png", seed=71)
    watching.until(lambda: str(added) in _paths(library))
    watching.settle()
    assert_index_matches_store(library)
