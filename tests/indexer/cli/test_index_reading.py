"""`clipsearch index` and `similar` on what is not a plain image file: FIFOs, device links, links out of the
roots. Each ends promptly, with what was left out named on stderr or a clean error, never a hang or a
traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import imagefactory as factory
from tests.clirunner import assert_clean_failure, invoke
from tests.deadline import within

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs POSIX")


def _model(config: Path) -> list[str]:
    return ["--model", str(config), "--pretrained", "none", "--device", "cpu"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two PNGs, a FIFO x.jpg, z.png -> /dev/zero and innocent.jpg -> a PNG outside the root."""
    folder = tmp_path / "photos"
    for seed in (1, 2):
        factory.pattern_png(folder / f"img{seed}.png", seed=seed)
    os.mkfifo(folder / "x.jpg")
    (folder / "z.png").symlink_to("/dev/zero")
    (folder / "innocent.jpg").symlink_to(factory.pattern_png(tmp_path / "private" / "secret.png", seed=3))
    return folder


def test_index_leaves_out_fifos_and_links_and_says_so(root: Path, tmp_path: Path, tiny_config: Path) -> None:
    library = tmp_path / "library"
    result = within(
        120, lambda: invoke("index", root, "--library", library, *_model(tiny_config)), unblock=[root / "x.jpg"]
    )
    assert result.exit_code == 0, result.output
    assert f"indexed {root}: 2 images found, 2 embedded" in result.stdout
    assert f"left out {root / 'x.jpg'}: not a regular file (FIFO)" in result.stderr
    assert "2 symbolic links not followed (see --follow-symlinks)" in result.stderr

    followed = within(
        120,
        lambda: invoke("index", root, "--library", library, "--follow-symlinks", "--json", *_model(tiny_config)),
        unblock=[root / "x.jpg"],
    )
    report = json.loads(followed.stdout)
    assert (report["embedded"], report["links_skipped"]) == (1, 0)
    assert sorted(report["skipped"]) == [
        [str(root / "x.jpg"), "not a regular file (FIFO)"],
        [str(root / "z.png"), "not a regular file (character device)"],
    ]


def test_similar_on_a_fifo_or_a_device_is_a_clean_error(root: Path, tmp_path: Path, tiny_config: Path) -> None:
    """Before, `similar` on a FIFO hung and on z.png -> /dev/zero ended in a MemoryError traceback."""
    library = tmp_path / "library"
    indexed = invoke("index", tmp_path / "private", "--library", library, *_model(tiny_config))
    assert indexed.exit_code == 0, indexed.output
    for query, kind in (("x.jpg", "FIFO"), ("z.png", "character device")):
        result = within(60, lambda q=query: invoke("similar", root / q, "--library", library), unblock=[root / "x.jpg"])
        output = assert_clean_failure(result)
        assert f"not a regular file ({kind})" in output
