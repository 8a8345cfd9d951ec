"""Typed errors the library raises; the CLI turns each into one clear message and exit code 1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class ClipsearchError(Exception):
    """Base class of every error a user can act on.

    A message names the caller's parameters as Python sees them, in backticks (`model`), and lists them in
    `parameters`; `naming` shows them another way, as the CLI does with its flags (--model).
    """

    def __init__(self, message: str, *, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameters = parameters

    def naming(self, names: Mapping[str, str]) -> str:
        """The message with each of its parameters called what `names` says (those it lacks stay as they are)."""
        return renamed(str(self), names, self.parameters)


def renamed(message: str, names: Mapping[str, str], parameters: Iterable[str]) -> str:
    """`message` with each `parameter` in backticks called what `names` says: how the CLI shows library
    errors and warnings with its flags."""
    for parameter in parameters:
        if parameter in names:
            message = message.replace(f"`{parameter}`", names[parameter])
    return message


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


# --- storage branch: the store's file and the disk under it ---------------------------------------------------


class DamagedLibraryError(ClipsearchError):
    """The library's database is not a clipsearch store that can be read: empty, garbled, or another program's."""


class LibraryReadOnlyError(ClipsearchError):
    """The library cannot be written here (read-only mount or no write permission); searching it still works."""


class DiskFullError(ClipsearchError):
    """The disk (or a quota or file-size limit) ran out while writing; what was committed before is kept."""


# --- pg branch: a store on a PostgreSQL server --------------------------------------------------------------


class DatabaseUnavailableError(ClipsearchError):
    """The database server named by `database_url` cannot be reached or logged into, or its driver is missing."""


class WriterWaitWarning(UserWarning):
    """Another index run (perhaps another machine's) holds a shared store: this run waits for it to finish."""


# --- end pg branch
# --- branch index: the FAISS file --------------------------------------------------------------------
class IndexSaveError(ClipsearchError):
    """The FAISS file could not be written (disk full, quota, read-only or unwritable folder); the store
    is intact and the next search rebuilds the index from it."""


class IndexFileWarning(UserWarning):
    """A FAISS file was unreadable, damaged or not this library's, and is rebuilt from the store."""


class IndexSaveWarning(UserWarning):
    """A rebuilt FAISS index could not be saved; this search runs from memory and the next one rebuilds."""


# --- onnx branch: the ONNX Runtime backend -----------------------------------------------------------


class OnnxExportError(ClipsearchError):
    """A model could not be exported to ONNX, or its export gives other vectors than torch."""


# --- cold branch: cold queries, ONNX speed, the precision that made the vectors --------------------------
class PrecisionMixWarning(UserWarning):
    """An index run embeds with another runtime or precision than the library's vectors were made with (say
    ONNX int8 into an fp32 library): the same model, so the vectors stay comparable and the run goes on; the
    library records both (`LibraryFacts.precision`)."""


# --- filters branch: search filters ------------------------------------------------------------------
class InvalidDateError(InvalidQueryError):
    """A date given to a filter (`after`, `before`) is not one of the accepted forms (`dates.DATE_FORMS`)."""


# --- query branch: export ---------------------------------------------------------------------------
class ExportError(ClipsearchError):
    """Results cannot be exported where asked (the folder is a file, or cannot be created or written)."""


# --- rootswatch branch: library roots and watching
class UnknownFolderError(ClipsearchError):
    """A folder to forget is not a recorded root and the library holds no image under it."""


class WatchError(ClipsearchError):
    """Watching a folder cannot start (no file system watcher available, or the folder cannot be watched)."""


# --- end rootswatch branch
# --- ray branch: indexing on a Ray cluster
class RayUnavailableError(ClipsearchError):
    """Indexing on Ray was asked for, but Ray is not installed, or its cluster cannot be reached or run the job."""


# --- end ray branch
# --- webapi branch: `clipsearch serve`'s JSON API
class UploadTooLargeError(ClipsearchError):
    """An uploaded image is larger than the server's `upload_limit`; nothing of it is kept."""


class UnknownUploadError(ClipsearchError):
    """A query names an `upload` the server does not hold (never uploaded, or expired from its memory)."""


# --- end webapi branch


# --- thumbs branch: the files the server hands out, by image id
class UnknownImageError(ClipsearchError):
    """No image has this `image_id`, or its file could not be read when it was indexed (a failed row)."""


class FileNotServedError(ClipsearchError):
    """An image's file is not handed out: gone, changed since indexing, not a regular file, or (once every
    symbolic link is resolved) not inside one of the library's roots."""


class ThumbnailWriteError(ClipsearchError):
    """A thumbnail cannot be written anywhere: not in the library, the per-user cache or a temporary folder."""


# --- end thumbs branch
