"""The torch-free tokenizer gives open_clip's ids, token for token, on texts chosen to break a port."""

from __future__ import annotations

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from retrieval.model.tokenizer import CLEANINGS, ClipTokenizer, plain, supported

CORPUS = [
    # plain, cased, punctuation and contractions
    "a red car",
    "Two BLUE Circles on a Striped Background!",
    "don't we'll THEY'RE it's I'm you've he'd",
    "1234567890 3.14159 -42 1e-5 #hashtag @user",
    # accents, composed and combining, ligatures, full width, mojibake ftfy repairs
    "Café crème brûlée à la française, naïve façade",
    "e\u0301 combining acute, A\u030a ring",
    "ÅNGSTRÖM ß straße İstanbul",
    "ﬁne ﬂow ligatures, ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "Mojibake: cafÃ© â€œquotedâ€\x9d",
    "“curly” ‘quotes’ — dashes – and … ellipsis",
    # emoji, including sequences with zero-width joiners and variation selectors
    "🐶🏖️ dog on the beach 🌅",
    "family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽",
    # other scripts: CJK, Korean, Cyrillic, Arabic, Hebrew, Devanagari, Thai
    "東京の夜景",
    "北京 天安门 广场",
    "한국어 텍스트 검색",
    "Привет, мир",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    # HTML entities (unescaped twice), whitespace of every kind
    "&amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;x&quot; &#39;y&#39;",
    "tab\there\nnew line\r\nwindows  double  spaces\u00a0nbsp\u2003em",
    # empty-ish
    "",
    " ",
    "\n\t ",
    ".",
    "x",
    "\u200b",
    "&nbsp;",
    "<start_of_text>",
    "a <end_of_text> b",
    # long: truncation must keep the end-of-text token last
    "word " * 100,
    "supercalifragilisticexpialidocious " * 20,
    "東京" * 200,
    "🐶" * 100,
]


@pytest.fixture(scope="module")
def vocab() -> str:
    return default_bpe()


@pytest.mark.parametrize("context_length", [77, 32, 16, 5])
@pytest.mark.parametrize("clean", CLEANINGS)
def test_ids_equal_open_clip(vocab: str, context_length: int, clean: str) -> None:
    """Every text of the corpus gives exactly open_clip's ids, at the context lengths of CLIP (77), the
    reference model (32) and the tiny one (16), and a very short one, with each cleaning open_clip has."""
    expected = SimpleTokenizer(context_length=context_length, clean=clean)(CORPUS).numpy()
    got = ClipTokenizer(vocab, context_length, clean=clean)(CORPUS)
    assert got.dtype == np.int64
    assert got.shape == expected.shape == (len(CORPUS), context_length)
    for text, row, want in zip(CORPUS, got, expected, strict=True):
        assert row.tolist() == want.tolist(), text


def test_truncation_keeps_start_and_end_tokens(vocab: str) -> None:
    """A text longer than the context is cut to exactly the context, still starting with `<start_of_text>`
    and ending with `<end_of_text>`; a short one is padded with zeros after its end token."""
    tokenizer = ClipTokenizer(vocab, 16)
    long, short = tokenizer(["word " * 100, "a red car"])
    assert (long[0], long[-1]) == (tokenizer.sot, tokenizer.eot)
    assert (long != 0).all()
    end = short.tolist().index(tokenizer.eot)
    assert short[0] == tokenizer.sot and end == 4 and not short[end + 1 :].any()


def test_additional_special_tokens(vocab: str) -> None:
    """Extra special tokens get the ids after `<end_of_text>` and are kept whole, as open_clip does."""
    texts = ["a <mask> on a <sep> beach", "plain"]
    extra = ["<mask>", "<sep>"]
    expected = SimpleTokenizer(context_length=12, additional_special_tokens=extra)(texts).numpy()
    np.testing.assert_array_equal(ClipTokenizer(vocab, 12, additional_special_tokens=extra)(texts), expected)


def test_only_reproducible_options_are_supported() -> None:
    """open_clip's random reduction tokenizers and unknown options are not claimed as reproducible."""
    assert supported({}) and supported({"clean": "canonicalize", "additional_special_tokens": ["<x>"]})
    assert not supported({"reduction_mask": "random"})
    assert not supported({"clean": "unheard-of"})
    assert not supported({"some_future_option": 1})


def test_plain_text_is_what_ftfy_leaves_unchanged() -> None:
    """The cleaning skips ftfy (and its import) only for text ftfy gives back as it is: checked on the corpus
    and on 3000 random printable ASCII strings, with the characters ftfy could act on made frequent."""
    import random

    import ftfy

    rng = random.Random(0)
    alphabet = [chr(code) for code in range(32, 127)] + ["'", '"', "<", ">", ";", "#", "`", "-", "\\"] * 4
    texts = [*CORPUS, *("".join(rng.choices(alphabet, k=rng.randrange(1, 40))) for _ in range(3000))]
    checked = [text for text in texts if plain(text)]
    assert len(checked) > 1500
    assert all(ftfy.fix_text(text) == text for text in checked)
    assert not plain("caf\u00e9") and not plain("a &amp; b") and not plain("tab\there") and not plain("\x1b[31m")
