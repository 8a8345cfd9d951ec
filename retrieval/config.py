"""Defaults, named once. Every option that has a default takes it from here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM_WEIGHTS = "none"
"""`--pretrained none`: random weights, seeded so that every load gives the same model (tests only)."""
RANDOM_WEIGHTS_SEED = 0

DEFAULT_DEVICE = "auto"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_BATCH_SIZE = 32
DEFAULT_DECODE_WORKERS = max(1, min(8, (os.cpu_count() or 2)))
DEFAULT_TOP_K = 10

LIBRARY_ENV = "CLIPSEARCH_LIBRARY"
DATABASE_FILE = "library.db"
INDEX_FILE_PREFIX = "index-"
INDEX_FILE_SUFFIX = ".faiss"


def _user_folder(env: str, macos_folder: str, xdg_variable: str, xdg_default: str, name: str) -> Path:
    """`env` if set; else `clipsearch/name` under the platform's folder of that kind: ~/Library/`macos_folder`
    on macOS, LOCALAPPDATA on Windows, `xdg_variable` (default ~/`xdg_default`) elsewhere."""
    given = os.environ.get(env)
    if given:
        return Path(given).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / macos_folder
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get(xdg_variable) or Path.home() / xdg_default)
    return base / "clipsearch" / name


def default_library_dir() -> Path:
    """Where a library lives when neither `--library` nor CLIPSEARCH_LIBRARY says: the user's data dir."""
    return _user_folder(LIBRARY_ENV, "Application Support", "XDG_DATA_HOME", ".local/share", "default")


REFERENCE_CONFIG_FILE = "reference.json"
REFERENCE_CHECKPOINT_FILE = "reference.pt"
"""The project's own small model, trained by `clipsearch train` on generated scenes (see README): package
data in retrieval/model/data/, found by `retrieval.model.reference`."""
DEFAULT_DEMO_IMAGES = 300
DEFAULT_DEMO_K = 3
"""Results the demo shows per query."""
DEFAULT_DEMO_FOLDER = Path("clipsearch-demo")
"""Where the demo's scenes and libraries go, under the current folder."""
DEFAULT_FAILURES_SHOWN = 20
"""Skipped files that a library's facts (`clipsearch info`) list."""
GPU_CHOICES = ("auto", "never", "always")
"""Where FAISS searches: `auto` on a GPU when faiss has one."""

DEFAULT_TRAIN_EPOCHS = 10
DEFAULT_TRAIN_BATCH_SIZE = 128
DEFAULT_TRAIN_LR = 5e-4
DEFAULT_TRAIN_WEIGHT_DECAY = 0.1
DEFAULT_TRAIN_WARMUP_STEPS = 100
DEFAULT_TRAIN_GRAD_CLIP = 1.0
DEFAULT_TRAIN_SEED = 0
DEFAULT_TRAIN_VAL_IMAGES = 1000
"""`clipsearch train`'s defaults, named here so that `train --help` needs no torch (`TrainOptions` has the same)."""

# --- intake: reading files safely ---
MAX_FILE_BYTES = 256 * 1024 * 1024
"""A file larger than this is not read (recorded as "file too large"): no photo is that big, while a sparse
file or a runaway download can be."""
DECODE_MEMORY_BUDGET = 1024 * 1024 * 1024
"""Bytes of full-size pixels (width x height x 4, Pillow's RGB/RGBA working size) that the decoding threads of
one indexing run may hold at once; a thread waits until its image fits, and an image larger than the whole
budget decodes alone. Converting to RGB can briefly take about twice an image's share."""


# --- branch index (constants measured on branch ann2, docs/ann.md): FAISS index kind, file checks, filters ---
ANN_MIN_VECTORS = 20_000
"""From this many vectors on, the FAISS index is an IVF (approximate) index; below it, exact flat. Exact search
costs 2.05 ms of one core at 20k vectors and 4.4 ms at 30k: it stops meeting the 3 ms budget near 25k, while
IVF is already 4x cheaper at 20k (docs/ann.md, "Exact search")."""
ANN_FLAT_AGAIN_BELOW = ANN_MIN_VECTORS // 2
"""An IVF index whose library shrank below this many vectors is rebuilt flat (hysteresis around the threshold)."""
ANN_RETRAIN_GROWTH = 4.0
"""An IVF index is retrained once the library holds this many times the vectors it was trained with: recall
at a fixed nprobe hardly moves with growth, but each list grows with N, so a query's cost grows linearly;
at 4x the sqrt rule asks for twice the lists and each list is twice as long (docs/ann.md)."""
IVF_LISTS_PER_SQRT = 4.0
"""nlist = IVF_LISTS_PER_SQRT * sqrt(vectors), rounded to a power of two: 512 at 20k, 1024 at 100k, 4096 at 1M."""
IVF_NPROBE_PER_SQRT_NLIST = 2.0
"""nprobe = IVF_NPROBE_PER_SQRT_NLIST * sqrt(nlist), rounded up to a power of two: the share of lists needed
for recall@10 >= 0.97 on text-like queries halves when nlist quadruples (measured: 32 of 256 lists 0.977,
64 of 512 0.983, 64 of 1024 0.981, 128 of 4096 0.990 at 1M; docs/ann.md)."""
IVF_CODES = "SQfp16"
"""How an IVF index keeps its vectors: `SQfp16` (float16, exactly the values the store keeps, half the bytes
of `Flat`) or `SQ8` (8 bits per component, a quarter, at a recall cost). Chosen at 1M in docs/ann.md."""
IVF_CODE_CHOICES = ("Flat", "SQfp16", "SQ8")
IVF_TRAIN_POINTS_PER_LIST = 40
"""Training sample for k-means: this many vectors per list; recall stops improving near 40 (docs/ann.md)."""
IVF_MIN_POINTS_PER_LIST = 39
"""nlist is capped so that every list gets at least this many training vectors (faiss warns below 39)."""
IVF_TRAIN_SEED = 0
FILTER_BITMAP_MIN_DENSITY = 1 / 64
"""An id filter becomes a bitmap over 0..max id (1 bit per id) once it keeps at least this fraction of
that range; a sparser one is a hashed id set (faiss IDSelectorBatch)."""
INDEX_DIGEST_FULL_MAX_BYTES = 64 << 20
"""A FAISS file up to this size is checked by a digest of all its bytes; a larger one by sampled blocks
(reading it all would defeat memory-mapped loading)."""
INDEX_DIGEST_BLOCKS = 256
INDEX_DIGEST_BLOCK_BYTES = 4096


# --- onnx branch: the ONNX Runtime backend -----------------------------------------------------------
DEFAULT_BACKEND = "auto"
BACKEND_CHOICES = ("auto", "torch", "onnx")
"""What runs the model: `auto` is ONNX Runtime on the CPU when onnxruntime is installed, torch on a GPU."""
BACKEND_ENV = "CLIPSEARCH_BACKEND"
ONNX_FOLDER = "onnx"
"""Where a library keeps its models' exports: `<library>/onnx/<model short key>/`."""
ONNX_CACHE_ENV = "CLIPSEARCH_ONNX_CACHE"
ONNX_MAX_ABS_DIFF = 1e-4
ONNX_MIN_COSINE = 0.9999
"""An fp32 export is used only if, on a fixed batch, no vector component differs from torch's by more than
ONNX_MAX_ABS_DIFF and every vector has at least this cosine to torch's (measured: 1e-7 and 1.0)."""
INT8_MIN_COSINE = 0.99
"""A dynamically quantised (int8) image tower is used only if every vector of the fixed batch keeps at least
this cosine to torch's fp32 vector; its recall cost is measured with `clipsearch bench recall`."""

# --- pg branch: a store on a PostgreSQL server
SHARED_WRITER_WAIT_S = 24 * 3600.0
"""How long an index run into a shared (PostgreSQL) store waits for another machine's run to finish before it
gives up with `LibraryBusyError`: runs from several machines take turns rather than fail."""
# --- end pg branch

# --- light branch: the generated scenes' defaults, which `clipsearch generate-dataset`'s options show, here so
# that starting the CLI does not import the generator (and Pillow with it)
DEFAULT_STYLE = "v2"
STYLE_CHOICES = ("v1", "v2", "sketch")
"""The scene generator's styles (`retrieval.quality.scene_dataset.GENERATORS` names one generator per style)."""
DEFAULT_IMAGE_SIZE = 128
DEFAULT_CAPTIONS_PER_IMAGE = 3
DEFAULT_SPLIT_SIZES: dict[str, int] = {
    "train": 20_000,
    "val": 500,
    "test": 1_000,
    "heldout-train": 2_000,
    "heldout-test": 500,
}
# --- end light branch

# --- filters branch: search filters
ORIENTATIONS = ("landscape", "portrait", "square")
"""`orientation` filter values: wider than high, higher than wide, or as wide as high (stored pixels)."""
EXTENSION_SYNONYMS = {"jpeg": "jpg", "jpe": "jpg", "tiff": "tif"}
"""Extensions that name one format: a file `x.JPEG` is stored, and found by `--ext jpg`, as `jpg`."""
EXTENSION_MAX_CHARS = 32
"""Longer file name suffixes are not extensions: stored as none, so no `extensions` filter keeps them."""
# --- end filters branch


# --- dups branch: near-duplicates (retrieval/duplicates.py, benchmarks/duplicates.py) ------------------------
DEFAULT_DUPLICATE_THRESHOLD = 0.995
"""An image is a near-duplicate of a group's best copy when their vectors' cosine is at least this. Chosen by
benchmarks/duplicates.py with the reference model on generated scenes and their edited copies (resized,
re-compressed, cropped, brightened, watermarked, rotated, PNG<->JPEG) against hard negatives (the same scene
with one attribute changed): the lowest threshold at which 99% of the copies a group would let go are true
copies. With reference model v5: tune half 0.995, test half 0.995, recall 0.868 of the removable copies;
0.99 lets 1.4% wrong ones go on the test half (recall 0.910). (With v3 the rule chose 0.99: tune 0.991, test
0.978, recall 0.886.)"""
DUPLICATE_MIN_THRESHOLD = 0.5
"""Lower thresholds are refused: they pair up unrelated pictures, and the pairs grow towards N² (a
library's random pairs already score 0.4 to 0.5 with CLIP models)."""
DUPLICATE_QUERY_BATCH = 2048
"""Stored vectors per faiss range search: enough for faiss to spread a batch over its threads, few enough
that a batch's pairs stay small."""
DUPLICATE_NPROBE = 8
"""Lists an IVF index visits per range-search query (a search visits 64 of 1024 at 100k): a near-duplicate lies
so close to its original that it shares its list or a neighbour's. Measured at 100k CLIP-like vectors (1024
lists) by benchmarks/duplicates_cost.py: pair recall against exact 0.978 at 1 list, 0.998 at 2, 1.000 at 4
and 8 (threshold 0.95); 8 keeps a margin for the finer lists of larger libraries (4096 at 1M)."""
# --- end dups branch


# --- query branch: fused queries, result order, export
NOT_WEIGHT = -1.0
"""The weight of a `--not` part: a negative part counts as much as a positive one of weight 1."""
FUSION_MIN_NORM = 1e-2
"""A fused query vector shorter than this (relative to the sum of the weights' sizes) is refused: its parts
(nearly) cancel out, and its direction would be noise, e.g. an image less its own stored float16 vector (about
1e-3). Two texts as close as "circle" and "circles" (cosine 0.99) still leave 0.07."""
DEFAULT_SORT = "relevance"
SORT_CHOICES = ("relevance", "date", "-date")
"""Result order: best first; or, among the results chosen by score, oldest (`date`) or newest (`-date`) first,
by date taken, falling back to the file's mtime."""
DEFAULT_EXPORT_MODE = "link"
EXPORT_MODES = ("link", "hardlink", "copy")
"""How `export` writes a result: a symbolic link to the original (default), a hard link, or a copy."""
# --- end query branch


# --- rootswatch branch: `clipsearch watch`
WATCH_QUIET_SECONDS = 1.0
"""A watched file is indexed once no event touched it for this long and its size and mtime are what they were at
its last event; a burst of events is applied as one batch once no event came for this long either."""
WATCH_MAX_DELAY_SECONDS = 5.0
"""Under a steady stream of events, the files that have settled are applied at least this often."""
WATCH_TICK_SECONDS = 0.2
"""How often the watcher looks at what it has pending."""
# --- end rootswatch branch


# --- ray branch: indexing on a Ray cluster (indexer/ray_index.py)
RAY_ADDRESS_AUTO = "auto"
"""`ray_address` auto: the cluster RAY_ADDRESS names or one `ray start` runs on this machine, else a new local one."""
RAY_EXTRA = "pip install 'clipsearch[ray]'"
RAY_DECODE_BATCH_SIZE = 16
"""Files per decode task: big enough that a task's start-up is paid by many images, small enough that a lost
worker costs little and the encode actors are fed early."""
RAY_CPUS_PER_ENCODE_ACTOR = 4
"""On a cluster without GPUs, one encode actor per this many CPUs (the rest decode); at least one actor."""
# --- end ray branch


def default_onnx_cache_dir() -> Path:
    """Where an `Encoder` that belongs to no library keeps its ONNX exports (CLIPSEARCH_ONNX_CACHE, else the
    user's cache folder)."""
    return _user_folder(ONNX_CACHE_ENV, "Caches", "XDG_CACHE_HOME", ".cache", ONNX_FOLDER)


# --- branch bigindex: the large-library index (IVF-PQ built in shards, merged on disk; docs/capacity.md) ---
LARGE_MIN_VECTORS = 5_000_000
"""From this many vectors on, the index is the large kind (`IVF{nlist},PQ{m}` with exact re-ranking) instead of
`IVF{nlist},SQfp16`. Below, SQfp16 is faster and more exact (2.3 ms CPU, recall 0.985 at 1M, against ~6 ms
plus the store's reads); its cost is memory, 1 KB per vector: 5 GB of codes at 5M, past a comfortable share
of a 16 GB machine's page cache, while PQ128 keeps 0.7 GB there (docs/capacity.md)."""
LARGE_AGAIN_BELOW = LARGE_MIN_VECTORS // 2
"""A large index whose library shrank below this many vectors is rebuilt as the SQfp16 IVF (hysteresis)."""
LARGE_CODES = "PQ128"
"""The large index's codes: PQ<m>, m bytes per vector (8 bits per sub-quantiser of dim/m components). At 1M
(IVF1024, nprobe 64, re-ranking 10 x k) PQ128 reaches recall@10 0.980 text-like / 0.979 image-like, as SQ8
(0.981 / 0.998) at a quarter of its bytes (139 against 522 per vector); PQ64 (75 bytes) needs 50 x k
candidates for 0.963 / 0.989 (docs/capacity.md)."""
LARGE_RERANK_FACTOR = 50
"""A large-index search fetches this many times k candidates by their PQ scores and re-scores them exactly
against the stored float16 vectors. At 10M (PQ128, IVF1024, nprobe 64): PQ alone 0.557 / 0.483, 10 x k
0.970 / 0.929, 50 x k 0.988 / 0.992 (text-like / image-like); the store reads 500 rows by key in about
the time of 100 (20 against 14.5 ms p50 at 1M in SQLite, under load; docs/capacity.md)."""
LARGE_RANGE_MARGIN = 0.05
"""A large index's range search (near-duplicates) gathers candidates this far below the radius by PQ score,
then keeps those whose exact score reaches it. PQ128's inner product of a pair scoring 0.8 or more errs by
-0.001 on average (std 0.008; 1% of pairs under -0.026, the worst -0.082: 59 629 pairs of 100k 512-d vectors)."""
LARGE_BUILD_WORKERS: int | None = None
"""Worker processes that add a large index's shards; None: one per core the process may use; 0: none (the
shards are added in the calling process, with all faiss threads)."""
LARGE_PQ_TRAIN_POINTS = 65_536
"""The training sample holds at least this many vectors: a PQ sub-quantiser's k-means fits 256 centroids
(faiss trains PQ on at most 256 x 256 points)."""
LARGE_SHARD_VECTORS = 1_000_000
"""Vectors each build worker adds to its copy of the trained index before writing it as a shard."""
LARGE_ADD_CHUNK = 65_536
"""Vectors converted to float32 and added at once while building a shard (bounds a worker's memory)."""
LARGE_TRAIN_SEED = 0


# --- relevance branch: the calibrated relevance of text-query hits (retrieval/relevance.py) ----------------
NEUTRAL_RANDOM_PROMPTS = 48
NEUTRAL_SEED = 1
NEUTRAL_WORDS = ("a photo", "an image", "a picture", "something", "a thing", "stuff", "the", "hello", "yes", "it")
"""The neutral prompts (queries that mean nothing): this many seeded random letter strings, and these words."""
RELEVANCE_SAMPLE_SIZE = 1024
"""Library vectors sampled (seeded) into the derived `relevance-sample-<generation>.npy` file, written with the
FAISS file: the neutral prompts' score distribution over the library is measured on them."""
RELEVANCE_SAMPLE_SEED = 0
RELEVANCE_LIFT_WEIGHT = 10.76
RELEVANCE_VAGUENESS_WEIGHT = -2.18
RELEVANCE_SPREAD_WEIGHT = 2.26
RELEVANCE_BIAS = -14.29
"""relevance = sigmoid(lift weight * lift + vagueness weight * vagueness + spread weight * spread + bias), fitted
by logistic regression on split A of benchmarks/relevance_cutoff.py (reference model v5, generated scenes;
v4's were 10.97, -1.82, 2.10, -14.05; v3's 4.2, -1.17, 1.5, -7.07)."""
DEFAULT_MIN_RELEVANCE = 0.51
"""The default relevance cutoff of text queries, chosen on split A of benchmarks/relevance_cutoff.py (best F1,
nonsense queries' results counted as false hits) and reported there on split B; for reference model v5 (v4's
was 0.46, v3's 0.34)."""
# --- end relevance branch

# --- webapi branch: `clipsearch serve`'s JSON API (indexer/web/) ------------------------------------------
DEFAULT_UPLOAD_LIMIT = 20 * 1024 * 1024
"""The largest image `POST /api/uploads` takes, in bytes; a larger body is refused (413) while it streams in."""
UPLOAD_CACHE_SIZE = 256
"""Uploaded images kept, as vectors only (never their bytes), in the server's memory; the oldest unused go first."""
SERVE_MAX_RESULTS = 1000
"""The most results one web search ranks (`offset` + `k`): deeper pages are refused rather than scanned."""
SERVE_RELOAD_INTERVAL = 2.0
"""Seconds a running server waits at least between two reloads of its index, and between two looks at the store's
generation when no request comes (indexer/web/reloads.py); meanwhile it searches the index it has, leaving out
rows deleted since."""
SERVE_RELOAD_SETTLE = 10.0
"""Seconds the store must stay at a generation whose FAISS file is not written yet (an index run between two
batches, or one killed before its end) before a running server rebuilds that generation's index from the store;
a generation whose file is there is loaded at once."""
SERVE_IMAGE_MAX_AGE = 3600
"""`Cache-Control: private, max-age` of an original image served by id (it may change on disk: revalidated)."""
SERVE_DUPLICATE_CACHE_SIZE = 8
"""Duplicate reports kept per server (each keyed by generation, threshold and folders)."""
SERVE_DUPLICATE_GROUPS = 200
"""Duplicate groups `GET /api/duplicates` lists unless its `limit` says otherwise (its summary counts them all)."""
# --- end webapi branch

# --- thumbs branch: thumbnails and the files the server hands out (retrieval/thumbnails.py, served_files.py)
THUMBNAIL_SIZE = 320
"""A thumbnail's longest side, in pixels: sharp in a grid of 160-px cells on a 2x screen."""
THUMBNAIL_MIN_SIZE = 16
THUMBNAIL_MAX_SIZE = 1024
"""The sizes `ThumbnailCache.path_for` makes; anything else is refused (a client may choose the size)."""
THUMBNAIL_QUALITY = 85
"""JPEG quality of a thumbnail: about 20 KB for a 320-px photo, no visible loss at that size."""
THUMBNAIL_FOLDER = "thumbnails"
"""Under the library folder: `thumbnails/<aa>/<content hash>-<size>.jpg`."""
THUMBNAIL_FORMAT_VERSION = 1
"""Written into every thumbnail and its ETag: raise it when the way thumbnails are made changes, and every
cached one (on disk and in browsers) is made again."""
THUMBNAIL_MEMORY_BUDGET = 512 * 1024 * 1024
"""Bytes of full-size pixels that a cache's threads decode at once (a few 24 MP photos), as the indexer's."""
THUMBNAIL_CACHE_ENV = "CLIPSEARCH_THUMBNAIL_CACHE"
"""Where thumbnails of a library that cannot be written (read-only) go instead: this folder if set, else the
user's cache folder (~/.cache/clipsearch/thumbnails on Linux)."""


def default_thumbnail_cache_dir() -> Path:
    """The per-user folder for thumbnails of read-only libraries (shared: a thumbnail is keyed by content)."""
    return _user_folder(THUMBNAIL_CACHE_ENV, "Caches", "XDG_CACHE_HOME", ".cache", "thumbnails")


# --- end thumbs branch

# --- servecli branch: `clipsearch serve`, its discovery file, searching through it --------------------------
DEFAULT_SERVE_HOST = "127.0.0.1"
"""`clipsearch serve` binds loopback only unless told otherwise (any other host prints a warning)."""
DEFAULT_SERVE_PORT = 8000
SERVER_FILE = "server.json"
"""The discovery file a running server keeps in its library folder (`retrieval/server_file.py`)."""
SERVER_FILE_MAX_BYTES = 4096
"""A discovery file larger than this is garbage, not read."""
SERVER_CONNECT_TIMEOUT = 0.2
"""Seconds a search waits for the server's socket to accept before it searches locally."""
SERVER_READ_TIMEOUT = 5.0
"""Seconds a search waits for the server's answer once connected (a warm query takes milliseconds; a
server still loading its model or its index answers late, and the search then goes local)."""
SERVER_STOP_GRACE = 5
"""Seconds a stopping server gives requests in flight to finish."""
# --- end servecli branch
# --- model4 (issue 10: graded targets, best.pt by attribute precision) ---
TRAIN_SELECT_BY_CHOICES = ("recall", "attributes")
"""What `clipsearch train` chooses best.pt by: mean validation recall, or mean attribute precision@3 of the
short benchmark queries (generated data)."""
