"""Deterministic generators of real image files for tests: valid, odd-mode and broken ones.

Each function writes one file with Pillow (or by hand where Pillow would be too costly)
and returns its path, so tests exercise real decoders instead of mocks; `photo_folder` writes
the tests' usual folder of them.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = [
    "animated_gif",
    "cmyk_jpeg",
    "huge_dimensions_png",
    "jpeg_with_exif",
    "large_jpeg",
    "palette_png_with_transparency",
    "pattern_images",
    "pattern_png",
    "photo_folder",
    "png_16bit_grey",
    "solid_jpeg",
    "text_as_image",
    "truncated_jpeg",
    "zero_byte",
]

Color = tuple[int, int, int]
Size = tuple[int, int]

EXIF_IFD = 0x8769
"""Pointer tag of the Exif sub-IFD, where capture facts such as DateTimeOriginal live."""

EXIF_SUB_IFD_TAGS = frozenset(
    {
        33434,
        33437,
        34850,
        34855,
        36864,
        36867,
        36868,
        37377,
        37378,
        37380,
        37383,
        37385,
        37386,
        37510,
        40961,
        40962,
        40963,
        41987,
        42016,
        42033,
        42034,
        42035,
        42036,
    }
)
"""Tags `solid_jpeg(exif=...)` writes into the Exif sub-IFD; every other tag goes to IFD0."""

RED: Color = (255, 0, 0)
BLUE: Color = (0, 0, 255)


def _as_path(path: str | Path) -> Path:
    """Accept str or Path, creating the parent folder so tests can nest freely."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _build_exif(tags: dict[int, object]) -> Image.Exif:
    """Place each tag in IFD0 or the Exif sub-IFD, as cameras do."""
    exif = Image.Exif()
    sub_ifd = exif.get_ifd(EXIF_IFD)
    for tag, value in tags.items():
        if tag in EXIF_SUB_IFD_TAGS:
            sub_ifd[tag] = value
        else:
            exif[tag] = value
    return exif


def solid_jpeg(
    path: str | Path,
    color: Color = (200, 30, 30),
    size: Size = (64, 48),
    *,
    exif: dict[int, object] | None = None,
    quality: int = 90,
) -> Path:
    """A single-colour RGB JPEG, optionally carrying the given EXIF tags."""
    target = _as_path(path)
    image = Image.new("RGB", size, color)
    extra = {"exif": _build_exif(exif).tobytes()} if exif else {}
    image.save(target, "JPEG", quality=quality, **extra)
    return target


def pattern_png(path: str | Path, seed: int, size: Size = (64, 64)) -> Path:
    """An RGB PNG of random colour blocks and shapes; distinct seeds look clearly distinct."""
    target = _as_path(path)
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, _random_color(rng))
    draw = ImageDraw.Draw(image)
    block = max(1, min(width, height) // 8)
    for top in range(0, height, block):
        for left in range(0, width, block):
            if rng.random() < 0.5:
                draw.rectangle((left, top, left + block - 1, top + block - 1), _random_color(rng))
    for _ in range(4):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_random_color(rng))
    image.save(target, "PNG")
    return target


def pattern_images(folder: str | Path, count: int) -> list[Image.Image]:
    """`count` visually distinct RGB images (seeds 0..count-1), written as real PNG files in `folder` and
    read back, so they went through Pillow's decoder as an indexed photo does."""
    loaded = []
    for seed in range(count):
        with Image.open(pattern_png(_as_path(folder) / f"{seed}.png", seed=seed)) as image:
            loaded.append(image.convert("RGB"))
    return loaded


def _random_color(rng: random.Random) -> Color:
    """One random opaque RGB colour."""
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def jpeg_with_exif(
    path: str | Path,
    *,
    orientation: int | None = None,
    taken: str | None = "2021:07:04 18:30:00",
    make: str | None = "Canon",
    model: str | None = "EOS 80D",
    size: Size = (80, 40),
) -> Path:
    """A JPEG whose stored (pre-rotation) pixels are red on the left half and blue on the
    right, with Orientation/Make/Model in IFD0 and DateTimeOriginal in the Exif sub-IFD."""
    target = _as_path(path)
    width, height = size
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    if make is not None:
        exif[271] = make
    if model is not None:
        exif[272] = model
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[36867] = taken
    image.save(target, "JPEG", quality=95, exif=exif.tobytes())
    return target


def photo_folder(root: str | Path, top: int = 10) -> Path:
    """`top` distinct PNGs at the top (img00.png, img01.png, ...), two more in trip/ (img10.png and
    img11.png) and trip/camera.jpg, an upright 40x80 JPEG with EXIF date and camera (orientation 6)."""
    folder = Path(root)
    for seed in range(top):
        pattern_png(folder / f"img{seed:02d}.png", seed=seed)
    for seed in (10, 11):
        pattern_png(folder / "trip" / f"img{seed:02d}.png", seed=seed)
    jpeg_with_exif(folder / "trip" / "camera.jpg", orientation=6)
    return folder


def truncated_jpeg(path: str | Path, size: Size = (256, 256)) -> Path:
    """A valid noisy JPEG cut to half its bytes, so decoding fails part-way."""
    target = _as_path(path)
    noise = random.Random(1234).randbytes(size[0] * size[1] * 3)
    image = Image.frombytes("RGB", size, noise)
    image.save(target, "JPEG", quality=90)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def zero_byte(path: str | Path) -> Path:
    """An empty file (e.g. an interrupted copy)."""
    target = _as_path(path)
    target.write_bytes(b"")
    return target


def text_as_image(path: str | Path) -> Path:
    """A text file wearing an image extension, such as fake.jpg."""
    target = _as_path(path)
    target.write_text("hello, not an image\n", encoding="ascii")
    return target


def cmyk_jpeg(path: str | Path, size: Size = (32, 32)) -> Path:
    """A CMYK JPEG of pure red ink mix (C=0, M=255, Y=255, K=0), i.e. RGB about (255, 0, 0)."""
    target = _as_path(path)
    Image.new("CMYK", size, (0, 255, 255, 0)).save(target, "JPEG", quality=95)
    return target


def png_16bit_grey(path: str | Path, value: int = 32768, size: Size = (32, 32)) -> Path:
    """A 16-bit greyscale PNG (mode I;16) of one uniform value."""
    target = _as_path(path)
    Image.new("I;16", size, value).save(target, "PNG")
    return target


def palette_png_with_transparency(path: str | Path, size: Size = (32, 32)) -> Path:
    """A palette PNG whose left half uses a transparent green index and right half opaque red."""
    target = _as_path(path)
    width, height = size
    image = Image.new("P", size, 0)
    palette = [0, 255, 0, *RED] + [0, 0, 0] * 254
    image.putpalette(palette)
    image.paste(1, (width // 2, 0, width, height))
    image.save(target, "PNG", transparency=0)
    return target


def animated_gif(
    path: str | Path,
    colors: tuple[Color, ...] = (RED, BLUE),
    size: Size = (32, 32),
) -> Path:
    """An animated GIF with one solid frame per colour; the first frame is colors[0]."""
    target = _as_path(path)
    frames = [Image.new("RGB", size, color) for color in colors]
    frames[0].save(target, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return target


def huge_dimensions_png(path: str | Path, size: Size = (20000, 20000)) -> Path:
    """A tiny, hand-made 1-bit PNG whose header claims `size`: a decompression-bomb stand-in.

    Pillow would allocate one byte per pixel to build it, so the IHDR is written directly,
    followed by an IDAT holding only the first few (blank) rows.
    """
    target = _as_path(path)
    width, height = size
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    pixels = zlib.compress(row * min(height, 8), 9)
    body = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")
    target.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return target


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Encode one PNG chunk: length, type, payload, CRC over type and payload."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def large_jpeg(path: str | Path, size: Size = (3000, 2000)) -> Path:
    """A large RGB JPEG with a few coloured bands, for draft-mode (reduced decode) tests."""
    target = _as_path(path)
    width, height = size
    image = Image.new("RGB", size, (30, 120, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 3, height), fill=(220, 40, 40))
    draw.ellipse((width // 2, height // 4, width - 1, height - 1), fill=(40, 200, 60))
    image.save(target, "JPEG", quality=85)
    return target
