"""A small BERT encoder in plain PyTorch (post-LayerNorm, GELU), loaded from a `.safetensors` file.

Parameter names follow Hugging Face's `BertModel` (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, ...), so its checkpoints load as they are; the
pooler is not used. `read_safetensors` parses the format itself (an 8-byte little-endian header
length, a JSON header, raw little-endian tensors), so no `safetensors` package is needed.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a .safetensors file (F32/F16/I64/I32 tensors)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {spec['dtype']} (known: {', '.join(_DTYPES)})")
        lo, hi = spec["data_offsets"]
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(data, dtype=dtype, count=(hi - lo) // dtype.itemsize, offset=8 + n + lo)
        out[name] = torch.from_numpy(arr.reshape(spec["shape"]).copy())
    return out


class BertLayer(nn.Module):
    """Self-attention and a GELU MLP, each followed by residual + LayerNorm (BERT is post-norm)."""

    def __init__(self, dim: int, heads: int, mlp: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=eps)
        self.mlp_in, self.mlp_out, self.mlp_norm = nn.Linear(dim, mlp), nn.Linear(mlp, dim), nn.LayerNorm(dim, eps=eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # h (B, T, D), bias (B, 1, 1, T)
        b, t, d = h.shape
        q, k, v = (f(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))  # each (B, heads, T, D/heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias  # (B, heads, T, T)
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = self.attn_norm(h + self.attn_out(a))
        return self.mlp_norm(h + self.mlp_out(F.gelu(self.mlp_in(h))))  # exact (erf) GELU, as BERT's "gelu"


class Bert(nn.Module):
    """Token ids (B, T) and a padding mask (B, T) -> token states (B, T, dim) of the last layer."""

    def __init__(self, vocab_size: int, dim: int = 384, layers: int = 6, heads: int = 12, mlp: int = 1536,
                 max_positions: int = 512, type_vocab_size: int = 2, eps: float = 1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_positions, dim)
        self.token_type = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList(BertLayer(dim, heads, mlp, eps) for _ in range(layers))

    @classmethod
    def from_config(cls, config: dict) -> "Bert":
        """From a Hugging Face BERT `config.json` dict."""
        if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported BERT variant: hidden_act {config.get('hidden_act')}, "
                             f"position_embedding_type {config.get('position_embedding_type')}")
        return cls(config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                   config["num_attention_heads"], config["intermediate_size"], config["max_position_embeddings"],
                   config["type_vocab_size"], config["layer_norm_eps"])

    def load_hf_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load Hugging Face BertModel parameters (names as in its checkpoints; the pooler is ignored)."""
        names = {"word.weight": "embeddings.word_embeddings.weight",
                 "position.weight": "embeddings.position_embeddings.weight",
                 "token_type.weight": "embeddings.token_type_embeddings.weight",
                 "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
        per_layer = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                     "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                     "mlp_in": "intermediate.dense", "mlp_out": "output.dense", "mlp_norm": "output.LayerNorm"}
        for i in range(len(self.layers)):
            for ours, theirs in per_layer.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        missing = [theirs for theirs in names.values() if theirs not in state]
        if missing:
            raise KeyError(f"BERT checkpoint lacks {len(missing)} parameters (first: {missing[0]})")
        self.load_state_dict({ours: state[theirs] for ours, theirs in names.items()}, strict=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        h = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type(torch.zeros_like(ids)))
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, torch.finfo(h.dtype).min)
        bias = bias[:, None, None, :]  # (B, 1, 1, T): padding keys get no attention
        for layer in self.layers:
            h = layer(h, bias)
        return h  # (B, T, dim)
