"""Safe image opening for embedding: bounded memory, RGB output, EXIF facts, typed errors.

Every failure a user can act on (empty file, not an image, corrupt data, decompression
bomb, unreadable file) becomes an `UnreadableImageError`; nothing here prints or changes
Pillow's global settings, so `decode_image` may run from many threads at once. Threads that
share a `MemoryBudget` hold at most its bytes of full-size pixels at once; files are read by
`retrieval.fileread` (regular files only, bounded by their size).
"""

from __future__ import annotations

import io
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from retrieval.errors import UnreadableImageError
from retrieval.fileread import read_regular_file
from retrieval.membudget import MemoryBudget

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "DecodedImage",
    "ImageInfo",
    "decode_image",
    "read_and_decode",
]

MAX_IMAGE_PIXELS: int = 178_956_970
"""Decompression-bomb limit: twice Pillow's default warning level, the level Pillow itself
refuses at (~13400 x 13400). Pillow's own hard refusal at 2 x `PIL.Image.MAX_IMAGE_PIXELS`
still applies during `Image.open`, so a larger `max_pixels` cannot raise that ceiling."""

_BASE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

# Pillow raises all of these on corrupt or truncated data, depending on the plugin.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    EOFError,
    ZeroDivisionError,
    TypeError,
    IndexError,
)

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 274
_TAG_MAKE = 271
_TAG_MODEL = 272
_TAG_DATETIME = 306
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME_DIGITIZED = 36868

# Same table as PIL.ImageOps.exif_transpose.
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_WORKING_BYTES_PER_PIXEL = 4  # Pillow keeps RGB, RGBA, I and F pixels in 4 bytes
_WHITE = (255, 255, 255)
_PADDING = " \t\r\n\x00"
_REDUCIBLE_MODES = frozenset({"RGB", "L", "CMYK", "YCbCr"})
_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")
_DATE_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S")

# Guards every `warnings.catch_warnings` block in this module; see `_quiet`.
_WARNINGS_LOCK = threading.Lock()


def _detect_extensions() -> frozenset[str]:
    """Return the suffixes this Pillow build can open, adding HEIC/HEIF/AVIF when supported."""
    extensions = set(_BASE_EXTENSIONS)
    try:
        import pillow_heif  # type: ignore[import-not-found, unused-ignore]

        pillow_heif.register_heif_opener()
        extensions.update({".heic", ".heif"})
    except ImportError:
        pass
    with warnings.catch_warnings():  # import time, single-threaded; older Pillow warns
        warnings.simplefilter("ignore")
        if features.check("avif"):
            extensions.add(".avif")
    return frozenset(extensions)


IMAGE_EXTENSIONS: frozenset[str] = _detect_extensions()


@dataclass(frozen=True)
class ImageInfo:
    """Facts about the full-size original, as a viewer would display it."""

    width: int
    height: int
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None


@dataclass(frozen=True)
class DecodedImage:
    """An RGB, upright, possibly size-reduced image ready for the model, plus its facts."""

    image: Image.Image
    info: ImageInfo


def read_and_decode(
    path: str,
    *,
    min_side: int = 224,
    max_pixels: int = MAX_IMAGE_PIXELS,
    follow_symlinks: bool = True,
    budget: MemoryBudget | None = None,
) -> tuple[bytes, DecodedImage]:
    """Read `path` once and decode it, returning the bytes too so the caller hashes exactly them.

    Only a regular file is read, and only up to its size (see `retrieval.fileread`): a FIFO, a device
    or a file larger than `config.MAX_FILE_BYTES` is an `UnreadableImageError`, never a hang or a huge
    allocation. With `follow_symlinks` false a symbolic link (the last component) is refused too."""
    data = read_regular_file(path, follow_symlinks=follow_symlinks)
    return data, decode_image(data, path, min_side=min_side, max_pixels=max_pixels, budget=budget)


def decode_image(
    data: bytes,
    path: str,
    *,
    min_side: int = 224,
    max_pixels: int = MAX_IMAGE_PIXELS,
    budget: MemoryBudget | None = None,
) -> DecodedImage:
    """Decode `data` into an upright RGB image whose shortest side is at least `min_side`
    (or the original's, if smaller) and at most about twice that; `path` only labels errors.
    With a `budget`, the full-size pixels are held within it (see `MemoryBudget`)."""
    if min_side < 1:
        raise ValueError(f"min_side must be positive, got {min_side}")
    if not data:
        raise UnreadableImageError(path, "zero-byte file")
    try:
        return _decode(data, path, min_side, max_pixels, budget)
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise UnreadableImageError(path, _bomb_reason(str(exc))) from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(path, "not an image (cannot identify image file)") from exc
    except _CORRUPT_ERRORS as exc:
        raise UnreadableImageError(path, f"truncated or corrupt image data: {exc}") from exc


def _decode(data: bytes, path: str, min_side: int, max_pixels: int, budget: MemoryBudget | None) -> DecodedImage:
    """Open, bound, draft, load, describe, convert, shrink and orient one image."""
    with _quiet():
        img = Image.open(io.BytesIO(data))  # reads the header only
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise UnreadableImageError(
                path,
                f"image too large: {width}x{height} pixels exceeds limit of {max_pixels}",
            )
        if img.format in ("JPEG", "MPO") and min(width, height) > 2 * min_side:
            img.draft("RGB", (min_side, min_side))  # img.size is now the reduced size that load() gives
        with _holding(budget, img.size[0] * img.size[1] * _WORKING_BYTES_PER_PIXEL):
            img.load()
            with _quiet():
                info, orientation = _describe(img, width, height)
            pixels: Image.Image = img
            if pixels.mode in _REDUCIBLE_MODES:
                pixels = _shrink(pixels, min_side)
            pixels = _shrink(_to_rgb(pixels), min_side)
            if pixels is img:
                pixels = img.copy()  # detach from the file object the `with` closes
            img.close()  # free the full-size pixels before leaving the budget
    return DecodedImage(image=_apply_orientation(pixels, orientation), info=info)


def _holding(budget: MemoryBudget | None, amount: int) -> AbstractContextManager[None]:
    return nullcontext() if budget is None else budget.hold(amount)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Pillow's soft bomb warning (our `max_pixels` decides; its hard limit still
    raises) and its corrupt-metadata UserWarnings, so the library never prints.

    `warnings.catch_warnings` swaps the process-wide filter list, so callers are
    serialised to keep concurrent threads from restoring each other's filters; the
    guarded work (header parse, EXIF parse) is small.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _describe(img: Image.Image, width: int, height: int) -> tuple[ImageInfo, int]:
    """Read EXIF facts of the opened original; width/height are its full stored size."""
    exif = _read_exif(img)
    orientation = _orientation(exif)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    info = ImageInfo(
        width=width,
        height=height,
        format=img.format,
        taken_at=_taken_at(exif),
        camera_make=_clean_text(exif.get(_TAG_MAKE)),
        camera_model=_clean_text(exif.get(_TAG_MODEL)),
    )
    return info, orientation


def _bomb_reason(message: str) -> str:
    """Turn Pillow's DecompressionBombError text into our short 'image too large' reason."""
    match = _BOMB_MESSAGE.search(message)
    if match is None:
        return f"image too large: {message}"
    return f"image too large: {match.group(1)} pixels exceeds limit of {match.group(2)}"


def _shrink(img: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by an integer factor while the shortest side stays >= `min_side`."""
    shortest = min(img.size)
    if shortest <= 2 * min_side:
        return img
    return img.reduce(shortest // min_side)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency onto white, high bit depths rescaled."""
    mode = img.mode
    if mode.startswith("I;16"):
        grey = np.asarray(img).astype(np.uint16) >> 8  # a plain convert("L") clips to 255
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _flatten_on_white(img)
    if mode in ("I", "F"):
        return _scale_wide_grey(img)
    return img.convert("RGB")


def _flatten_on_white(img: Image.Image) -> Image.Image:
    """Composite an image with alpha or a transparent colour onto a white background."""
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # no second full-size copy
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _scale_wide_grey(img: Image.Image) -> Image.Image:
    """Map 32-bit integer or float grey to 8 bits by its nominal range: values that fit
    [0, 1], [0, 255] or [0, 65535] keep that range, wider data is scaled by its own max."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    full_scale = peak
    for candidate in (1.0, 255.0, 65535.0):
        if peak <= candidate:
            full_scale = candidate
            break
    if img.mode == "I" and full_scale == 1.0:
        full_scale = 255.0
    scaled = np.clip(values * (255.0 / full_scale), 0.0, 255.0)
    return Image.fromarray(np.rint(scaled).astype(np.uint8)).convert("RGB")


def _read_exif(img: Image.Image) -> Image.Exif:
    """Return the image's EXIF, or an empty one when it is missing or unparsable."""
    try:
        return img.getexif()
    except Exception:  # broken EXIF must never fail the decode
        return Image.Exif()


def _orientation(exif: Image.Exif) -> int:
    """Return the EXIF orientation 1..8, treating anything invalid as 1 (upright)."""
    try:
        value = int(exif.get(_TAG_ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1
    return value if value in _TRANSPOSE else 1


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """Rotate/flip the (already small, loaded RGB) image upright, as exif_transpose would."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def _taken_at(exif: Image.Exif) -> datetime | None:
    """Return DateTimeOriginal, else DateTimeDigitized, else DateTime; None if none parses."""
    try:
        sub_ifd: Any = exif.get_ifd(_EXIF_IFD)
    except Exception:  # a corrupt sub-IFD only loses the date
        sub_ifd = {}
    candidates = (
        sub_ifd.get(_TAG_DATETIME_ORIGINAL),
        sub_ifd.get(_TAG_DATETIME_DIGITIZED),
        exif.get(_TAG_DATETIME),
    )
    for raw in candidates:
        parsed = _parse_exif_date(raw)
        if parsed is not None:
            return parsed
    return None


def _parse_exif_date(raw: object) -> datetime | None:
    """Parse 'YYYY:MM:DD HH:MM:SS' (str or bytes) into a naive datetime; garbage gives None."""
    text = _clean_text(raw)
    if text is None:
        return None
    for date_format in _DATE_FORMATS:
        try:
            return datetime.strptime(text[:19], date_format)
        except ValueError:
            continue
    return None


def _clean_text(raw: object) -> str | None:
    """Return an EXIF ASCII value as str without surrounding whitespace/NULs, or None."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return None
    text = raw.strip(_PADDING).split("\x00", 1)[0].strip(_PADDING)
    return text or None
