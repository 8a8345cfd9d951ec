"""open_clip's CLIP BPE tokenizer (`SimpleTokenizer`) without torch: the same ids from the same vocab file.

A text query on the ONNX backend must not import torch or open_clip, so this is a port of open_clip's
`tokenizer.SimpleTokenizer` (itself OpenAI CLIP's, MIT licence) to numpy, `regex` and `ftfy` (imported only
for text that is not plain ASCII, which it leaves unchanged): the same cleaning (ftfy, HTML unescaping
twice, then `lower`, `whitespace` or `canonicalize`), the same pre-split pattern, byte-level BPE over the
same merges, `<start_of_text>` first, and when a text is too long the ids cut at `context_length` with the
last one replaced by `<end_of_text>`. The vocab file is the one open_clip ships (bpe_simple_vocab_16e6.txt.gz),
copied beside each ONNX export. open_clip's random "reduction" tokenizers (training-time augmentation) and HF
tokenizers are not ported: a model that uses them keeps open_clip's tokenizer (`supported` says which).
"""

from __future__ import annotations

import html
import itertools
import math
import string
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import regex

BPE_MERGES = 49152 - 256 - 2
"""How many merges of the vocab file CLIP uses (open_clip reads lines 1 .. 48894)."""
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CLEANINGS = ("lower", "whitespace", "canonicalize")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map of the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes], strict=True))


def _basic_clean(text: str) -> str:
    if not plain(text):
        import ftfy  # 40-85 ms to import: most queries are plain text, which a cold query then does without

        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def plain(text: str) -> bool:
    """Text that `ftfy.fix_text` gives back unchanged: printable ASCII (no control characters, no terminal
    escapes, nothing that could be mojibake, curly quotes, ligatures or wide forms) with no `&` (no HTML
    entity to unescape)."""
    return text.isascii() and text.isprintable() and "&" not in text


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


_CLEAN: Mapping[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace_clean(_basic_clean(text)).lower(),
    "whitespace": lambda text: _whitespace_clean(_basic_clean(text)),
    "canonicalize": lambda text: _canonicalize(_basic_clean(text)),
}


def supported(kwargs: Mapping[str, Any]) -> bool:
    """Whether a model's `tokenizer_kwargs` (open_clip's text_cfg) are ones this port reproduces exactly."""
    known = {"clean", "additional_special_tokens", "reduction_mask"}
    return set(kwargs) <= known and kwargs.get("clean", "lower") in CLEANINGS and not kwargs.get("reduction_mask")


class ClipTokenizer:
    """Texts -> (N, context_length) int64 ids, identical to open_clip's `SimpleTokenizer` with the same options."""

    def __init__(
        self,
        vocab_file: str | Path,
        context_length: int,
        *,
        clean: str = "lower",
        additional_special_tokens: Sequence[str] = (),
    ) -> None:
        if clean not in _CLEAN:
            raise ValueError(f"unknown tokenizer cleaning {clean!r}; one of {', '.join(CLEANINGS)}")
        merges = read_merges(vocab_file)
        symbols = list(bytes_to_unicode().values())
        vocab = [*symbols, *(symbol + "</w>" for symbol in symbols), *(merge.replace(" ", "") for merge in merges)]
        specials = [*SPECIAL_TOKENS, *additional_special_tokens]
        vocab.extend(specials)
        self.encoder = {token: number for number, token in enumerate(vocab)}
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        """Each merge as its line, "first second" (a pair of symbols never holds a space)."""
        self.cache: dict[str, str] = {token: token for token in specials}
        self.pattern = regex.compile(
            "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot, self.eot = self.encoder[SPECIAL_TOKENS[0]], self.encoder[SPECIAL_TOKENS[1]]
        self.context_length = context_length
        self.clean = _CLEAN[clean]
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token: str) -> str:
        """The BPE pieces of one pre-split token, space-separated (the last piece ends in `</w>`)."""
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {f"{first} {second}" for first, second in itertools.pairwise(word)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, math.inf))
            if best not in self.ranks:
                break
            word = _merge(word, best.split(" "))
        joined = " ".join(word)
        self.cache[token] = joined
        return joined

    def encode(self, text: str) -> list[int]:
        """The ids of `text` without the start and end tokens."""
        ids: list[int] = []
        for token in self.pattern.findall(self.clean(text)):
            mapped = "".join(self.byte_encoder[byte] for byte in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            result[row, : len(ids)] = ids
        return result


def read_merges(vocab_file: str | Path) -> list[str]:
    """The BPE_MERGES merge lines CLIP uses (after the header line) of the gzipped vocab file. Only the start
    of the file is decompressed and split: the whole file holds five times as many lines, and reading them
    all was most of a cold query's tokenizer set-up."""
    wanted = BPE_MERGES + 2  # the header, the merges, and the start of the next line
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the gzip container
    data = b""
    with open(vocab_file, "rb") as handle:
        while data.count(b"\n") < wanted and (chunk := handle.read(1 << 16)):
            data += decompressor.decompress(chunk)
    lines = data.decode("utf-8", errors="replace").split("\n")
    if len(lines) < wanted:
        raise ValueError(f"{vocab_file} holds fewer than {BPE_MERGES} BPE merges")
    return lines[1 : BPE_MERGES + 1]


def _merge(word: tuple[str, ...], pair: Sequence[str]) -> tuple[str, ...]:
    """`word` with every left-to-right occurrence of `pair` joined into one symbol."""
    first, second = pair
    merged: list[str] = []
    position = 0
    while position < len(word):
        if word[position] == first and position + 1 < len(word) and word[position + 1] == second:
            merged.append(first + second)
            position += 2
        else:
            merged.append(word[position])
            position += 1
    return tuple(merged)
