"""clipsearch's core library: encode with open_clip, store in SQL, search with FAISS."""

from __future__ import annotations

from retrieval.errors import (
    ClipsearchError,
    DeviceUnavailableError,
    EmptyLibraryError,
    IndexRootError,
    InvalidQueryError,
    LibraryBusyError,
    LibraryNotFoundError,
    ModelMismatchError,
    ModelUnavailableError,
    UnreadableImageError,
)
from retrieval.index import VectorIndex
from retrieval.library import Library
from retrieval.model.encoder import Encoder, RandomWeightsWarning
from retrieval.model.specs import ModelIdentity, ModelSpec
from retrieval.search import Searcher, SearchResult
from retrieval.storage.records import FileMetadata, ImageRecord, LibraryStats
from retrieval.storage.store import Store

__all__ = [
    "ClipsearchError",
    "DeviceUnavailableError",
    "EmptyLibraryError",
    "Encoder",
    "FileMetadata",
    "ImageRecord",
    "IndexRootError",
    "InvalidQueryError",
    "Library",
    "LibraryBusyError",
    "LibraryNotFoundError",
    "LibraryStats",
    "ModelIdentity",
    "ModelMismatchError",
    "ModelSpec",
    "ModelUnavailableError",
    "RandomWeightsWarning",
    "SearchResult",
    "Searcher",
    "Store",
    "UnreadableImageError",
    "VectorIndex",
]
