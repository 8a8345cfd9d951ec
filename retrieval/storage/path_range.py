"""Paths under a folder as a range of byte strings: what the store's unique path index answers directly.

Paths are stored as the OS's bytes, so `prefix <= path < successor(prefix)` selects a folder's subtree
bytewise (case-sensitive, `%` and `_` plain characters), on every backend and in the light reader alike.
"""

from __future__ import annotations

import os


def folder_prefix(folder: str) -> str:
    """`/a/b` -> `/a/b/`: a prefix that matches `/a/b/c.jpg` but not `/a/bc.jpg`."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with `prefix` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def path_bounds(folder: str) -> tuple[bytes, bytes | None]:
    """(lower, upper): the stored paths under `folder` are those with `lower <= path < upper` (no upper: none)."""
    prefix = os.fsencode(folder_prefix(folder))
    return prefix, _successor(prefix)
