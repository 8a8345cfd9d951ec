"""Tests of retrieval.decode on real files made by tests.imagefactory: modes, EXIF, limits, errors."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from retrieval.config import MAX_FILE_BYTES
from retrieval.decode import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    DecodedImage,
    ImageInfo,
    decode_image,
    read_and_decode,
)
from retrieval.errors import UnreadableImageError
from retrieval.membudget import MemoryBudget
from tests import imagefactory as factory
from tests.deadline import within

Color = tuple[int, int, int]


def _decode_file(path: Path, **kwargs: int) -> DecodedImage:
    """Decode a file's bytes the way the indexer does."""
    return decode_image(path.read_bytes(), str(path), **kwargs)


def _reason(path: Path, **kwargs: int) -> str:
    """Return the UnreadableImageError reason decoding `path` must raise."""
    with pytest.raises(UnreadableImageError) as caught:
        _decode_file(path, **kwargs)
    assert caught.value.path == str(path)
    return caught.value.reason


def _pixel(decoded: DecodedImage, xy: tuple[int, int]) -> Color:
    """One RGB pixel of the decoded image."""
    value = decoded.image.getpixel(xy)
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


def _near(actual: Color, expected: Color, tolerance: int = 12) -> bool:
    """True when every channel is within `tolerance` (JPEG is lossy)."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_image_extensions_contain_base_set() -> None:
    base = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    assert base <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_solid_jpeg_decodes_to_rgb_with_size_and_format(tmp_path: Path) -> None:
    path = factory.solid_jpeg(tmp_path / "a.jpg", color=(200, 30, 30), size=(64, 48))
    decoded = _decode_file(path)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (64, 48)
    assert decoded.info == ImageInfo(64, 48, "JPEG", None, None, None)
    assert _near(_pixel(decoded, (10, 10)), (200, 30, 30))


def test_exif_date_make_and_model_are_parsed(tmp_path: Path) -> None:
    path = factory.jpeg_with_exif(tmp_path / "exif.jpg")
    info = _decode_file(path).info
    assert info.taken_at == datetime(2021, 7, 4, 18, 30, 0)
    assert info.camera_make == "Canon"
    assert info.camera_model == "EOS 80D"
    assert (info.width, info.height) == (80, 40)


def test_exif_text_is_cleaned_and_empty_becomes_none(tmp_path: Path) -> None:
    path = factory.jpeg_with_exif(tmp_path / "pad.jpg", make="  NIKON\x00\x00 ", model="   ")
    info = _decode_file(path).info
    assert info.camera_make == "NIKON"
    assert info.camera_model is None


def test_missing_exif_gives_none_fields(tmp_path: Path) -> None:
    path = factory.jpeg_with_exif(tmp_path / "bare.jpg", taken=None, make=None, model=None)
    info = _decode_file(path).info
    assert (info.taken_at, info.camera_make, info.camera_model) == (None, None, None)


@pytest.mark.parametrize("garbage", ["not a date", "0000:00:00 00:00:00", "2021:13:45 99:99:99"])
def test_garbage_exif_date_gives_none(tmp_path: Path, garbage: str) -> None:
    path = factory.jpeg_with_exif(tmp_path / "bad-date.jpg", taken=garbage)
    assert _decode_file(path).info.taken_at is None


def test_date_falls_back_to_digitized_then_datetime(tmp_path: Path) -> None:
    digitized = factory.solid_jpeg(tmp_path / "d.jpg", exif={36868: "2019:01:02 03:04:05"})
    assert _decode_file(digitized).info.taken_at == datetime(2019, 1, 2, 3, 4, 5)
    plain = factory.solid_jpeg(tmp_path / "p.jpg", exif={306: "2018:05:06 07:08:09"})
    assert _decode_file(plain).info.taken_at == datetime(2018, 5, 6, 7, 8, 9)
    both = factory.solid_jpeg(tmp_path / "b.jpg", exif={36867: "garbage", 306: "2017:01:01 00:00:00"})
    assert _decode_file(both).info.taken_at == datetime(2017, 1, 1)


def test_orientation_6_swaps_size_and_rotates_pixels(tmp_path: Path) -> None:
    # Stored 80x40: red left half, blue right half. Orientation 6 = rotate 90 degrees
    # clockwise for display, so the left (red) half ends up on top.
    path = factory.jpeg_with_exif(tmp_path / "rot.jpg", orientation=6, size=(80, 40))
    decoded = _decode_file(path)
    assert (decoded.info.width, decoded.info.height) == (40, 80)
    assert decoded.image.size == (40, 80)
    assert _near(_pixel(decoded, (20, 10)), factory.RED, 40)
    assert _near(_pixel(decoded, (20, 70)), factory.BLUE, 40)


def test_orientation_3_rotates_without_swapping(tmp_path: Path) -> None:
    path = factory.jpeg_with_exif(tmp_path / "r180.jpg", orientation=3, size=(80, 40))
    decoded = _decode_file(path)
    assert (decoded.info.width, decoded.info.height) == (80, 40)
    assert _near(_pixel(decoded, (10, 20)), factory.BLUE, 40)
    assert _near(_pixel(decoded, (70, 20)), factory.RED, 40)


def test_invalid_orientation_value_is_ignored(tmp_path: Path) -> None:
    path = factory.jpeg_with_exif(tmp_path / "o99.jpg", orientation=99, size=(80, 40))
    decoded = _decode_file(path)
    assert decoded.image.size == (80, 40)
    assert _near(_pixel(decoded, (10, 20)), factory.RED, 40)


@pytest.mark.filterwarnings("error")
def test_broken_exif_block_does_not_fail_decode(tmp_path: Path) -> None:
    path = tmp_path / "broken-exif.jpg"
    Image.new("RGB", (16, 16), (10, 200, 10)).save(
        path, "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0garbage-garbage"
    )
    decoded = _decode_file(path)
    assert decoded.image.size == (16, 16)
    assert decoded.info.taken_at is None


def test_cmyk_jpeg_becomes_rgb_red(tmp_path: Path) -> None:
    decoded = _decode_file(factory.cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert decoded.image.mode == "RGB"
    assert _near(_pixel(decoded, (16, 16)), (255, 0, 0), 20)


def test_16bit_grey_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    path = factory.png_16bit_grey(tmp_path / "g16.png", value=32768)
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
    decoded = _decode_file(path)
    assert decoded.image.mode == "RGB"
    assert _pixel(decoded, (5, 5)) == (128, 128, 128)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    decoded = _decode_file(factory.palette_png_with_transparency(tmp_path / "p.png"))
    assert decoded.image.mode == "RGB"
    assert _pixel(decoded, (2, 16)) == (255, 255, 255)
    assert _pixel(decoded, (30, 16)) == factory.RED


def test_rgba_transparency_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (4, 0, 8, 8))
    image.save(path)
    decoded = _decode_file(path)
    assert _pixel(decoded, (1, 1)) == (255, 255, 255)
    assert _pixel(decoded, (6, 1)) == factory.BLUE


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("1", 1, 255), ("L", 77, 77), ("LA", (77, 255), 77), ("I", 1_000_000, 255), ("F", 0.5, 128)],
)
def test_other_modes_become_rgb(tmp_path: Path, mode: str, value: float | tuple[int, int], expected: int) -> None:
    path = tmp_path / f"{mode}.tif"
    image = Image.new(mode, (8, 8), value)
    image.save(path, "TIFF")
    decoded = _decode_file(path)
    assert decoded.image.mode == "RGB"
    assert _pixel(decoded, (3, 3)) == (expected, expected, expected)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    colors = (factory.RED, factory.BLUE)
    path = factory.animated_gif(tmp_path / "anim.gif", colors=colors)
    with Image.open(path) as stored:
        assert getattr(stored, "n_frames", 1) == 2
    decoded = _decode_file(path)
    assert decoded.info.format == "GIF"
    assert _pixel(decoded, (16, 16)) == factory.RED


def test_large_jpeg_uses_draft_and_keeps_full_size_info(tmp_path: Path) -> None:
    path = factory.large_jpeg(tmp_path / "big.jpg", size=(3000, 2000))
    decoded = _decode_file(path, min_side=224)
    assert (decoded.info.width, decoded.info.height) == (3000, 2000)
    width, height = decoded.image.size
    assert 224 <= min(width, height) <= 448
    assert decoded.image.mode == "RGB"
    assert _near(_pixel(decoded, (20, 125)), (220, 40, 40), 20)


def test_jpeg_draft_picks_dct_scale(tmp_path: Path) -> None:
    # min(3000 // 300, 2000 // 300) = 6, so draft decodes at 1/4 scale: 750x500, whose
    # shortest side (500) is under 2 * 300, so no further reduction. A full decode
    # followed by reduce(2000 // 300) would give 500x334 instead.
    path = factory.large_jpeg(tmp_path / "big.jpg", size=(3000, 2000))
    decoded = _decode_file(path, min_side=300)
    assert decoded.image.size == (750, 500)
    assert (decoded.info.width, decoded.info.height) == (3000, 2000)


def test_large_png_is_reduced_keeping_min_side(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (40, 90, 160)).save(path)
    decoded = _decode_file(path, min_side=224)
    assert (decoded.info.width, decoded.info.height) == (2000, 1000)
    assert 224 <= min(decoded.image.size) <= 448
    assert decoded.image.size == (500, 250)
    assert _pixel(decoded, (100, 100)) == (40, 90, 160)


def test_small_image_is_not_upscaled(tmp_path: Path) -> None:
    path = factory.pattern_png(tmp_path / "s.png", seed=3, size=(50, 30))
    decoded = _decode_file(path)
    assert decoded.image.size == (50, 30)


def test_huge_dimensions_png_is_refused_without_allocating(tmp_path: Path) -> None:
    path = factory.huge_dimensions_png(tmp_path / "huge.png", size=(20000, 20000))
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    reason = _reason(path)
    assert time.perf_counter() - start < 1.0
    assert "too large" in reason
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # global untouched


def test_own_pixel_limit_reports_dimensions(tmp_path: Path) -> None:
    path = factory.pattern_png(tmp_path / "p.png", seed=1, size=(100, 60))
    reason = _reason(path, max_pixels=5000)
    assert reason == "image too large: 100x60 pixels exceeds limit of 5000"
    assert _decode_file(path, max_pixels=6000).info.width == 100


@pytest.mark.filterwarnings("error")  # Pillow's soft bomb warning must not leak
def test_own_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = factory.huge_dimensions_png(tmp_path / "h.png", size=(10000, 10000))
    limit = MAX_IMAGE_PIXELS // 2  # above Pillow's soft limit, below the image
    reason = _reason(path, max_pixels=limit)
    assert reason == f"image too large: 10000x10000 pixels exceeds limit of {limit}"


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    reason = _reason(factory.truncated_jpeg(tmp_path / "cut.jpg"))
    assert reason.startswith("truncated or corrupt image data")


def test_zero_byte_file_is_unreadable(tmp_path: Path) -> None:
    assert _reason(factory.zero_byte(tmp_path / "empty.jpg")) == "zero-byte file"


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    reason = _reason(factory.text_as_image(tmp_path / "fake.jpg"))
    assert reason == "not an image (cannot identify image file)"


def test_read_and_decode_returns_the_same_bytes(tmp_path: Path) -> None:
    path = factory.solid_jpeg(tmp_path / "r.jpg")
    data, decoded = read_and_decode(str(path))
    assert data == path.read_bytes()
    assert decoded.info.format == "JPEG"


def test_read_and_decode_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(UnreadableImageError) as caught:
        read_and_decode(missing)
    assert caught.value.path == missing
    assert caught.value.reason.startswith("cannot read file: ")
    assert "No such file" in caught.value.reason


def test_read_and_decode_directory(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError) as caught:
        read_and_decode(str(tmp_path))
    assert caught.value.reason.startswith("cannot read file: ")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file modes")
def test_read_and_decode_permission_denied(tmp_path: Path) -> None:
    path = factory.solid_jpeg(tmp_path / "locked.jpg")
    path.chmod(0)
    with pytest.raises(UnreadableImageError) as caught:
        read_and_decode(str(path))
    assert caught.value.reason == "cannot read file: Permission denied"


def _read_reason(path: Path, **kwargs: bool) -> str:
    """The reason read_and_decode gives for `path`, failing the test if it takes over 20 s."""
    with pytest.raises(UnreadableImageError) as caught:
        within(20, lambda: read_and_decode(str(path), **kwargs), unblock=[path])
    assert caught.value.path == str(path)
    return caught.value.reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named like an image (or swapped in after a scan) is refused at once: opening it must not wait
    for a writer, as a plain open() does forever."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    assert _read_reason(fifo) == "cannot read file: not a regular file (FIFO)"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_link_to_a_device_is_refused_without_reading(tmp_path: Path) -> None:
    """z.png -> /dev/zero is refused by what the open descriptor is; it is never read (reading it whole
    allocates until memory runs out)."""
    link = tmp_path / "z.png"
    link.symlink_to("/dev/zero")
    assert _read_reason(link) == "cannot read file: not a regular file (character device)"


def test_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    """A file larger than MAX_FILE_BYTES (here a sparse one: a PNG header and a hole) is 'file too large'."""
    path = factory.pattern_png(tmp_path / "vast.png", seed=1)
    os.truncate(path, MAX_FILE_BYTES + 1)
    assert _read_reason(path) == f"file too large: {MAX_FILE_BYTES + 1} bytes exceeds limit of {MAX_FILE_BYTES}"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_file_with_more_content_than_its_size_is_reported_as_changed(tmp_path: Path) -> None:
    """/proc files are regular files of size 0 that read as text: a file that holds more than its stat
    size (as one growing while read does) is read only up to that size plus one byte and reported."""
    link = tmp_path / "status.png"
    link.symlink_to("/proc/self/status")
    assert _read_reason(link) == "file changed while reading: it grew past 0 bytes"


def test_symbolic_link_refused_when_not_following(tmp_path: Path) -> None:
    """With follow_symlinks=False a link swapped in for a scanned file is not read through; the real file
    and a followed link read as before."""
    real = factory.solid_jpeg(tmp_path / "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    assert _read_reason(link, follow_symlinks=False) == "cannot read file: symbolic link not followed"
    assert read_and_decode(str(link))[0] == read_and_decode(str(real), follow_symlinks=False)[0] == real.read_bytes()


def test_decoding_waits_for_room_in_the_memory_budget(tmp_path: Path) -> None:
    """A decode whose full-size pixels do not fit beside what others hold waits; it runs once they let go,
    and then gives the same image as without a budget."""
    path = factory.pattern_png(tmp_path / "p.png", seed=4, size=(64, 48))
    budget = MemoryBudget(64 * 48 * 4)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with budget.hold(1):
            waiting = pool.submit(read_and_decode, str(path), budget=budget)
            time.sleep(0.5)
            assert not waiting.done() and budget.held == 1
        decoded = waiting.result(timeout=20)[1]
    assert budget.held == 0
    assert decoded.image.tobytes() == read_and_decode(str(path))[1].image.tobytes()


def test_image_larger_than_the_budget_decodes_alone(tmp_path: Path) -> None:
    """An image bigger than the whole budget is still decoded (alone), not refused."""
    path = factory.pattern_png(tmp_path / "p.png", seed=5, size=(64, 64))
    decoded = read_and_decode(str(path), budget=MemoryBudget(100))[1]
    assert decoded.image.size == (64, 64)


def test_pattern_png_is_deterministic_and_distinct(tmp_path: Path) -> None:
    first = factory.pattern_png(tmp_path / "a.png", seed=7).read_bytes()
    again = factory.pattern_png(tmp_path / "b.png", seed=7).read_bytes()
    other = factory.pattern_png(tmp_path / "c.png", seed=8)
    assert first == again
    with Image.open(other) as one, Image.open(tmp_path / "a.png") as two:
        assert one.tobytes() != two.tobytes()


def _outcome(data: bytes, name: str) -> tuple[object, ...]:
    """Comparable result of one decode: pixels and info, or the error reason."""
    try:
        decoded = decode_image(data, name)
    except UnreadableImageError as exc:
        return ("error", exc.reason)
    return ("ok", decoded.image.size, decoded.image.tobytes(), decoded.info)


def test_concurrent_decoding_matches_sequential(tmp_path: Path) -> None:
    paths = [
        factory.jpeg_with_exif(tmp_path / "rot.jpg", orientation=6),
        factory.cmyk_jpeg(tmp_path / "cmyk.jpg"),
        factory.png_16bit_grey(tmp_path / "g16.png"),
        factory.palette_png_with_transparency(tmp_path / "pal.png"),
        factory.animated_gif(tmp_path / "anim.gif"),
        factory.large_jpeg(tmp_path / "big.jpg", size=(1200, 900)),
        factory.truncated_jpeg(tmp_path / "cut.jpg"),
        factory.huge_dimensions_png(tmp_path / "huge.png"),
        factory.text_as_image(tmp_path / "fake.jpg"),
        *(factory.pattern_png(tmp_path / f"pat{i}.png", seed=i) for i in range(4)),
    ]
    jobs = [(p.read_bytes(), p.name) for p in paths] * 4
    sequential = [_outcome(data, name) for data, name in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda job: _outcome(*job), jobs))
    assert concurrent == sequential
    assert {result[0] for result in sequential} == {"ok", "error"}
