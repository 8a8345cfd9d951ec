"""clipsearch's core library: encode with open_clip, store in SQL, search with FAISS.

The public names load from their modules on first use (PEP 562), so that importing `retrieval` or a light
part of it (`retrieval.config`, `retrieval.errors`) imports neither torch, open_clip, faiss nor SQLAlchemy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see; `as` marks a re-export
    from retrieval.decode import read_and_decode as read_and_decode
    from retrieval.errors import ClipsearchError as ClipsearchError
    from retrieval.errors import DamagedLibraryError as DamagedLibraryError
    from retrieval.errors import DatabaseUnavailableError as DatabaseUnavailableError
    from retrieval.errors import DatasetError as DatasetError
    from retrieval.errors import DeviceUnavailableError as DeviceUnavailableError
    from retrieval.errors import DiskFullError as DiskFullError
    from retrieval.errors import EmptyLibraryError as EmptyLibraryError
    from retrieval.errors import ExportError as ExportError
    from retrieval.errors import FileNotServedError as FileNotServedError
    from retrieval.errors import IndexFileWarning as IndexFileWarning
    from retrieval.errors import IndexRootError as IndexRootError
    from retrieval.errors import IndexSaveError as IndexSaveError
    from retrieval.errors import IndexSaveWarning as IndexSaveWarning
    from retrieval.errors import InvalidDateError as InvalidDateError
    from retrieval.errors import InvalidQueryError as InvalidQueryError
    from retrieval.errors import LibraryBusyError as LibraryBusyError
    from retrieval.errors import LibraryNotFoundError as LibraryNotFoundError
    from retrieval.errors import LibraryReadOnlyError as LibraryReadOnlyError
    from retrieval.errors import ModelMismatchError as ModelMismatchError
    from retrieval.errors import ModelUnavailableError as ModelUnavailableError
    from retrieval.errors import OnnxExportError as OnnxExportError
    from retrieval.errors import PrecisionMixWarning as PrecisionMixWarning
    from retrieval.errors import RayUnavailableError as RayUnavailableError
    from retrieval.errors import ThumbnailWriteError as ThumbnailWriteError
    from retrieval.errors import TrainingError as TrainingError
    from retrieval.errors import UnknownFolderError as UnknownFolderError
    from retrieval.errors import UnknownImageError as UnknownImageError
    from retrieval.errors import UnknownUploadError as UnknownUploadError
    from retrieval.errors import UnreadableImageError as UnreadableImageError
    from retrieval.errors import UploadTooLargeError as UploadTooLargeError
    from retrieval.errors import WatchError as WatchError
    from retrieval.errors import WriterWaitWarning as WriterWaitWarning
    from retrieval.export import ExportReport as ExportReport
    from retrieval.export import export_files as export_files
    from retrieval.filters import SearchFilter as SearchFilter
    from retrieval.index import VectorIndex as VectorIndex
    from retrieval.library import Library as Library
    from retrieval.library_facts import LibraryFacts as LibraryFacts
    from retrieval.model.encoder import Encoder as Encoder
    from retrieval.model.encoder import RandomWeightsWarning as RandomWeightsWarning
    from retrieval.model.reference import model_file as model_file
    from retrieval.model.reference import reference_spec as reference_spec
    from retrieval.model.specs import ModelIdentity as ModelIdentity
    from retrieval.model.specs import ModelSpec as ModelSpec
    from retrieval.query import Part as Part
    from retrieval.query import Query as Query
    from retrieval.results import SearchResult as SearchResult
    from retrieval.search import Searcher as Searcher
    from retrieval.storage.records import FileMetadata as FileMetadata
    from retrieval.storage.records import ImageRecord as ImageRecord
    from retrieval.storage.records import LibraryStats as LibraryStats
    from retrieval.storage.store import Store as Store

_EXPORTS = {
    "retrieval.decode": ("read_and_decode",),
    "retrieval.errors": (
        "ClipsearchError",
        "DamagedLibraryError",
        "DatabaseUnavailableError",
        "DatasetError",
        "DeviceUnavailableError",
        "DiskFullError",
        "EmptyLibraryError",
        "ExportError",
        "FileNotServedError",
        "IndexFileWarning",
        "IndexRootError",
        "IndexSaveError",
        "IndexSaveWarning",
        "InvalidDateError",
        "InvalidQueryError",
        "LibraryBusyError",
        "LibraryNotFoundError",
        "LibraryReadOnlyError",
        "ModelMismatchError",
        "ModelUnavailableError",
        "OnnxExportError",
        "PrecisionMixWarning",
        "RayUnavailableError",
        "ThumbnailWriteError",
        "TrainingError",
        "UnknownFolderError",
        "UnknownImageError",
        "UnknownUploadError",
        "UnreadableImageError",
        "UploadTooLargeError",
        "WatchError",
        "WriterWaitWarning",
    ),
    "retrieval.filters": ("SearchFilter",),
    "retrieval.index": ("VectorIndex",),
    "retrieval.library": ("Library",),
    "retrieval.library_facts": ("LibraryFacts",),
    "retrieval.model.encoder": ("Encoder", "RandomWeightsWarning"),
    "retrieval.model.reference": ("model_file", "reference_spec"),
    "retrieval.model.specs": ("ModelIdentity", "ModelSpec"),
    "retrieval.export": ("ExportReport", "export_files"),
    "retrieval.query": ("Part", "Query"),
    "retrieval.results": ("SearchResult",),
    "retrieval.search": ("Searcher",),
    "retrieval.storage.records": ("FileMetadata", "ImageRecord", "LibraryStats"),
    "retrieval.storage.store": ("Store",),
}


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """`__all__`, `__getattr__` and `__dir__` of a package whose public names, listed per module in
    `exports`, load from their module on first use (and are then kept in the package)."""
    module_of = {name: module for module, names in exports.items() for name in names}
    namespace = vars(sys.modules[package])

    def getattr_(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_of[name]), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *module_of})

    return sorted(module_of), getattr_, dir_


__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
