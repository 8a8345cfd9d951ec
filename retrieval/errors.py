"""Typed errors the library raises; the CLI turns each into one clear message and exit code 1."""

from __future__ import annotations


class ClipsearchError(Exception):
    """Base class of every error a user can act on."""


class ModelUnavailableError(ClipsearchError):
    """The model's config or weights cannot be found or fetched."""


class ModelMismatchError(ClipsearchError):
    """The library was built with another model than the one asked for."""


class LibraryNotFoundError(ClipsearchError):
    """No library exists at the given location."""


class EmptyLibraryError(ClipsearchError):
    """The library holds no searchable image yet."""


class InvalidQueryError(ClipsearchError):
    """A query is empty or otherwise unusable."""


class UnreadableImageError(ClipsearchError):
    """An image file could not be opened or decoded; `reason` says why in a few words."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IndexRootError(ClipsearchError):
    """A folder given to the indexer does not exist or is not a folder."""


class DeviceUnavailableError(ClipsearchError):
    """The requested compute device is not present on this machine."""


class LibraryBusyError(ClipsearchError):
    """Another process is indexing into this library right now."""


class DatasetError(ClipsearchError):
    """A captioned dataset is malformed, incomplete, or cannot be written where asked."""


class TrainingError(ClipsearchError):
    """Training cannot start or resume as asked (bad options, incompatible checkpoint, no data)."""
