"""BERT's uncased WordPiece tokenizer, read from a Hugging Face `tokenizer.json` (no `tokenizers` package).

What the file declares for all-MiniLM-L6-v2 and this module does: BertNormalizer (drop control
characters and U+FFFD, whitespace -> ' ', spaces around CJK ideographs, lowercase, strip accents),
as the reference (Rust) implementation does it: lower-casing is per character (a word-final capital
sigma becomes σ, not Python's context-aware final ς) and its CJK ranges are its own (the
extension-E block starts at U+2B920, so U+2B820..U+2B91F are not padded),
BertPreTokenizer (split on whitespace and on every punctuation character, each its own token),
WordPiece (greedy longest match, continuation prefix '##', words over 100 characters -> [UNK]),
then `[CLS] ... [SEP]`, truncated to `max_length` (128 in the file).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import torch


def _is_punctuation(ch: str) -> bool:
    """BERT's rule: ASCII non-alphanumeric printable characters, and every Unicode category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def normalize(text: str, lowercase: bool = True) -> str:
    """BertNormalizer: clean text, pad CJK ideographs with spaces, lowercase and strip accents."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    if lowercase:  # strip_accents follows lowercase when the file leaves it null
        lowered = "".join(c.lower() for c in text)  # per character, as the reference: no final-sigma rule
        text = "".join(c for c in unicodedata.normalize("NFD", lowered) if unicodedata.category(c) != "Mn")
    return text


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: whitespace-separated words, every punctuation character its own word."""
    words: list[str] = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if _is_punctuation(ch):
                words += [word] if word else []
                words.append(ch)
                word = ""
            else:
                word += ch
        words += [word] if word else []
    return words


class WordPieceTokenizer:
    """Captions -> token ids with `[CLS]`/`[SEP]` and a padding mask, as the tokenizer.json declares."""

    def __init__(self, vocab: dict[str, int], *, lowercase: bool = True, max_length: int = 128,
                 unk: str = "[UNK]", prefix: str = "##", max_word_chars: int = 100, pad_id: int = 0):
        self.vocab, self.lowercase, self.max_length = vocab, lowercase, max_length
        self.unk_id, self.prefix, self.max_word_chars, self.pad_id = vocab[unk], prefix, max_word_chars, pad_id
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]

    @classmethod
    def from_file(cls, path: str | Path) -> "WordPieceTokenizer":
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        model, norm = spec["model"], spec.get("normalizer") or {}
        if model.get("type") != "WordPiece" or norm.get("type", "BertNormalizer") != "BertNormalizer":
            raise ValueError(f"{path}: not a BERT WordPiece tokenizer (model {model.get('type')}, "
                             f"normalizer {norm.get('type')})")
        return cls(model["vocab"], lowercase=bool(norm.get("lowercase", True)),
                   max_length=int((spec.get("truncation") or {}).get("max_length", 512)), unk=model["unk_token"],
                   prefix=model["continuing_subword_prefix"], max_word_chars=model["max_input_chars_per_word"],
                   pad_id=int((spec.get("padding") or {}).get("pad_id", 0)))

    def word_ids(self, word: str) -> list[int]:
        """Greedy longest-match WordPiece of one word; [UNK] when any part has no piece."""
        if len(word) > self.max_word_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = (self.prefix if start else "") + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return ids

    def pieces(self, text: str) -> list[int]:
        """The WordPiece ids of `text`, untruncated, without [CLS] and [SEP]."""
        return [i for w in pre_tokenize(normalize(text, self.lowercase)) for i in self.word_ids(w)]

    def length(self, text: str) -> int:
        """Tokens `text` needs ([CLS] and [SEP] included) before truncation; over max_length, the rest is cut."""
        return len(self.pieces(text)) + 2

    def ids(self, text: str) -> list[int]:
        """[CLS] pieces [SEP], the pieces truncated so the whole fits max_length."""
        return [self.cls_id, *self.pieces(text)[:self.max_length - 2], self.sep_id]

    def __call__(self, texts: list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids int64 (B, T), mask bool (B, T)), right-padded to `length` (default: the longest)."""
        rows = [self.ids(t) for t in texts]
        length = length or max(len(r) for r in rows)
        if max(len(r) for r in rows) > length:
            raise ValueError(f"a caption has {max(len(r) for r in rows)} tokens, more than length={length}")
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), True
        return ids, mask
