"""BERT's uncased WordPiece: normalisation, punctuation splitting, greedy longest match, padding mask."""

import torch

from ul_pipeline.text.tokenizer import WordPieceTokenizer, normalize, pre_tokenize

VOCAB = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "thumbs", "up", "sign", ":", "medium",
                                     "skin", "tone", "cafe", "hand", "##shake", "##s", ",", "a"])}


def test_normalize_lowercases_strips_accents_and_control_characters():
    assert normalize("Café\u0301 ÉTÉ\x00\x07\tX") == "cafe ete x"
    assert normalize("狗face") == " 狗 face"


def test_pre_tokenize_splits_punctuation_into_its_own_words():
    assert pre_tokenize("thumbs up sign: medium-light, (a)") == ["thumbs", "up", "sign", ":", "medium", "-", "light",
                                                                ",", "(", "a", ")"]


def test_wordpiece_greedy_longest_match_and_unknown_words():
    tok = WordPieceTokenizer(VOCAB, max_length=8)
    assert tok.word_ids("handshakes") == [VOCAB["hand"], VOCAB["##shake"], VOCAB["##s"]]
    assert tok.word_ids("handx") == [VOCAB["[UNK]"]]  # any unmatched rest makes the whole word unknown
    assert tok.ids("Thumbs up") == [2, VOCAB["thumbs"], VOCAB["up"], 3]
    assert len(tok.ids("a " * 20)) == 8  # truncated to max_length, [SEP] kept
    assert tok.ids("a " * 20)[-1] == 3


def test_batches_are_right_padded_with_a_mask():
    tok = WordPieceTokenizer(VOCAB, max_length=16)
    ids, mask = tok(["thumbs up sign: medium skin tone", "a"])
    assert ids.shape == mask.shape == (2, 9)
    assert mask[0].all() and mask[1].tolist() == [True] * 3 + [False] * 6
    assert (ids[1, 3:] == 0).all() and ids.dtype == torch.int64
    ids12, mask12 = tok(["a"], length=12)
    assert ids12.shape == (1, 12) and int(mask12.sum()) == 3


def test_parity_with_the_reference_normalizer_on_final_sigma_and_the_cjk_range():
    """The reference (Rust) BertNormalizer lower-cases character by character and pads CJK from U+2B920 on."""
    assert normalize("ΟΔΟΣ") == "οδοσ"  # per character: Σ -> σ; Python's str.lower() gives the final ς
    assert "ΟΔΟΣ".lower() == "οδος"  # (the rule that must not apply)
    assert normalize("a\U0002B8A0b") == "a\U0002B8A0b"  # U+2B820..U+2B91F: not padded by the reference
    assert normalize("a\U0002B920b") == "a \U0002B920 b"  # from U+2B920: a CJK ideograph, padded


def test_length_counts_tokens_before_truncation():
    tok = WordPieceTokenizer(VOCAB, max_length=8)
    assert tok.length("a " * 20) == 22 and len(tok.ids("a " * 20)) == 8
