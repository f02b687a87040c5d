"""The text-conditioned base model: masks, the learned null caption, guidance, the drop rate, the store's
captions in a Stage-2 batch, and bit-identity of every existing model with text conditioning off."""

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ul_pipeline.config import load_config, to_dict
from ul_pipeline.data.shards import write_shards
from ul_pipeline.data.sources import EmojiSource
from ul_pipeline.diffusion import ancestral_sample
from ul_pipeline.diffusion.forward import add_noise
from ul_pipeline.evaluation.results import result_config
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.latents.store import LatentStoreError, open_store
from ul_pipeline.latents.text_features import ensure_text_features, read_captions
from ul_pipeline.nets.presets import build_base_model
from ul_pipeline.nets.text_base import TextCondition
from ul_pipeline.stage2 import BaseModel, Stage2Terms
from ul_pipeline.stage2.batches import stage2_batches, stage2_fields
from ul_pipeline.stage2.build import build_stage2_model
from ul_pipeline.stage2.text_conditioned import TextConditionedBaseModel, text_condition_of
from ul_pipeline.text.encoder import TextEncoder, text_encoder_sha256

LATENT = (4, 8, 8)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "emoji_mini.tgz"


def text_model(mode: str, seed: int = 0) -> TextConditionedBaseModel:
    torch.manual_seed(seed)
    return build_stage2_model(load_config("smoke", [f"stage2.text_conditioning={mode}"]), LATENT).eval()


def randomise(module: torch.nn.Module, seed: int, skip: str | None = None) -> None:
    """Every parameter (the zero-initialised ones too) random, except those whose name contains `skip`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if skip is None or skip not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def captions(lengths=(3, 5, 7), tokens: int = 7, seed: int = 1) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(tokens)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    pooled = F.normalize(torch.randn(len(lengths), 384, generator=g), dim=1)
    return TextCondition(pooled, torch.randn(len(lengths), tokens, 384, generator=g), mask)


def pad(text: TextCondition, tokens: int, seed: int = 2) -> TextCondition:
    """The same captions padded to `tokens` positions with garbage token states."""
    b, t, d = text.token_states.shape
    states = torch.randn(b, tokens, d, generator=torch.Generator().manual_seed(seed)) * 5  # (B, tokens, D)
    states[:, :t] = torch.where(text.mask[..., None], text.token_states, states[:, :t])
    return TextCondition(text.pooled, states, F.pad(text.mask, (0, tokens - t)))


def test_padding_tokens_never_change_the_output():
    model = text_model("cross")
    randomise(model.net, 3)
    z, logsnr = torch.randn(3, *LATENT), torch.tensor([-3.0, 0.0, 4.0])
    short, long = pad(captions(), 7, seed=2), pad(captions(), 19, seed=3)
    with torch.no_grad():
        v_short, v_long = model.net(z, logsnr, short), model.net(z, logsnr, long)
        unmasked = TextCondition(long.pooled, long.token_states, torch.ones_like(long.mask))
        v_unmasked = model.net(z, logsnr, unmasked)
    assert torch.allclose(v_short, v_long, atol=1e-5)
    assert (v_unmasked - v_long).abs().max() > 1e-2  # the garbage would change it, were it not masked


def test_fresh_cross_attention_model_equals_the_pooled_only_model():
    cross, pooled = text_model("cross"), text_model("pooled")
    randomise(cross.net, 4, skip=".proj.")  # everything but the cross-attention outputs, which start at zero
    assert all(not p.any() for n, p in cross.net.named_parameters() if n.startswith("cross") and ".proj." in n)
    missing, unexpected = pooled.net.load_state_dict(cross.net.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith(("cross", "text.tokens", "text.null_token"))
                                              for k in unexpected)
    z, logsnr, text = torch.randn(3, *LATENT), torch.tensor([-3.0, 0.0, 4.0]), captions()
    with torch.no_grad():
        assert torch.equal(cross.net(z, logsnr, text), pooled.net(z, logsnr, text))
        randomise(cross.net, 5)  # cross-attention that has learned something
        v_cross = cross.net(z, logsnr, text)
    pooled.net.load_state_dict(cross.net.state_dict(), strict=False)
    assert (v_cross - pooled.net(z, logsnr, text)).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["pooled", "cross"])
def test_guidance_zero_is_the_conditional_branch_and_guidance_subtracts_the_learned_null(mode):
    model = text_model(mode)
    randomise(model.net, 6)
    text, w, steps = captions(), 1.5, 4

    def sample(denoise):
        return ancestral_sample(denoise, (3, *LATENT), model.schedule, steps, final="noisy",
                                generator=torch.Generator().manual_seed(7))

    def cond(z, logsnr):
        return model.net(z, logsnr, text)

    def guided(z, logsnr):
        null = text.dropped(torch.ones(3, dtype=torch.bool))
        return (1 + w) * cond(z, logsnr) - w * model.net(z, logsnr, null)

    assert torch.equal(model.sample_z0(text, steps, 0.0, generator=torch.Generator().manual_seed(7)), sample(cond))
    with_guidance = model.sample_z0(text, steps, w, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(with_guidance, sample(guided), atol=1e-5)
    with torch.no_grad():  # another learned null moves the guided samples, never the unguided ones
        model.net.text.null_pooled.add_(1.0)
    assert not torch.allclose(model.sample_z0(text, steps, w, generator=torch.Generator().manual_seed(7)),
                              with_guidance, atol=1e-3)
    assert torch.equal(model.sample_z0(text, steps, 0.0, generator=torch.Generator().manual_seed(7)), sample(cond))


class RecordingNet(torch.nn.Module):
    """Stands in for TextBaseViT: records which captions were dropped, predicts zeros."""

    cross = True

    def __init__(self):
        super().__init__()
        self.drops = []

    def forward(self, z, logsnr, text):
        self.drops.append(text.drop)
        return torch.zeros_like(z)


def test_captions_are_dropped_to_the_null_at_label_dropout_in_training_only():
    net = RecordingNet()
    model = TextConditionedBaseModel(net, (1, 2, 2), label_dropout=0.1)
    n = 20_000
    text = TextCondition(torch.randn(n, 4), torch.randn(n, 2, 4), torch.ones(n, 2, dtype=torch.bool))
    model.train().loss_terms(torch.randn(n, 1, 2, 2), torch.zeros(n, dtype=torch.long),
                             torch.Generator().manual_seed(0), text=text)
    rate = net.drops[-1].float().mean().item()
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / n) ** 0.5  # measured: ~0.1 within 4 standard errors
    model.eval().loss_terms(torch.randn(8, 1, 2, 2), torch.zeros(8, dtype=torch.long), text=text[:8])
    assert net.drops[-1] is None or not net.drops[-1].any()


@pytest.fixture(scope="module")
def captioned_store(tmp_path_factory):
    """Emoji fixture -> shards -> latent store (a toy image encoder) -> the real text encoder's features."""
    root = tmp_path_factory.mktemp("t2i_store")
    shards, url = str(root / "shards"), str(root / "latents.zarr")
    write_shards(EmojiSource(str(FIXTURE)), shards, shard_size=8, val_size=0, seed=0, resolution=32, channels=3,
                 num_classes=10)
    meta = {"encoder_sha256": "e" * 64, "stage1_config": {"preset": "toy"}, "logsnr_0": 5.0}
    extract_latents(shards, "train", url, lambda x: F.avg_pool2d(x.float() / 127.5 - 1.0, 8)[:, :2], meta,
                    block_size=8, batch_size=4)
    bare = str(root / "bare.zarr")  # the same latents, no text features
    extract_latents(shards, "train", bare, lambda x: F.avg_pool2d(x.float() / 127.5 - 1.0, 8)[:, :2], meta,
                    block_size=8, batch_size=4)
    encoder = TextEncoder()
    ensure_text_features(url, shards, encoder)
    return shards, url, bare, encoder


@pytest.mark.parametrize("in_memory", [True, False])
def test_captions_travel_from_shards_through_the_store_into_a_stage2_batch(captioned_store, in_memory):
    shards, url, _, encoder = captioned_store
    store = open_store(url)
    cfg = load_config("smoke", ["stage2.text_conditioning=cross", f"data.in_memory={in_memory}",
                                "stage2.train.batch_size=17", "data.shuffle_buffer=17"])
    source = stage2_batches(cfg, store)
    batch = source.named(next(iter(source(0))))
    text = text_condition_of(batch)  # one batch = the whole split (17 emoji), in some order
    want = encoder.encode(read_captions(shards, "train", store.key_list()))
    rows = [int(np.abs(want.pooled.numpy() - p.numpy()).sum(1).argmin()) for p in text.pooled]
    assert sorted(rows) == list(range(17))  # every caption once
    for i, r in enumerate(rows):  # each row's pooled, mask and token states are its caption's
        k = int(want.mask[r].sum())
        assert torch.allclose(text.pooled[i], want.pooled[r], atol=1e-6)
        assert int(text.mask[i].sum()) == k and text.mask[i, :k].all()
        assert torch.allclose(text.token_states[i, :k], want.token_states[r, :k], atol=1e-5)
    assert torch.equal(batch["z_clean"][0], torch.from_numpy(np.asarray(store.z_clean[rows[0]], dtype=np.float32)))
    del source
    gc.collect()


def test_a_store_without_text_features_of_this_encoder_is_refused_naming_it(captioned_store):
    _, _, bare, _ = captioned_store
    cfg = load_config("smoke", ["stage2.text_conditioning=pooled"])
    with pytest.raises(LatentStoreError) as refused:
        stage2_fields(cfg, open_store(bare))
    assert f"latent store {bare}" in str(refused.value)
    assert f"text_features/{text_encoder_sha256()[:16]}" in str(refused.value)
    fields = stage2_fields(load_config("smoke", ["stage2.text_conditioning=pooled"]), open_store(captioned_store[1]))
    assert fields[-1].endswith("/pooled") and not any("token_states" in f for f in fields)  # pooled reads pooled


def old_loss_terms(model: BaseModel, z_clean, labels, generator) -> Stage2Terms:
    """The class-conditional loss as written before text conditioning (commit ca8a945)."""
    labels = model.drop_labels(labels, generator)
    noised = add_noise(z_clean, model.schedule, generator)
    return Stage2Terms.of(noised, noised.eps_hat(model.net(noised.x_t, noised.logsnr, labels)), model.bias)


def test_text_conditioning_off_builds_the_same_model_from_the_same_random_numbers(monkeypatch, captioned_store):
    cfg = load_config("smoke")
    assert cfg.stage2.text_conditioning == "none"
    torch.manual_seed(0)
    net = build_base_model(cfg.stage2.preset, LATENT, cfg.data.num_classes)
    reference = BaseModel(net, LATENT, cfg.data.num_classes, logsnr_min=cfg.stage2.logsnr_min)
    after_reference = torch.get_rng_state()
    torch.manual_seed(0)
    model = build_stage2_model(cfg, LATENT)
    assert type(model) is BaseModel and torch.equal(torch.get_rng_state(), after_reference)  # no extra draws
    assert list(model.state_dict()) == list(reference.state_dict())  # no new parameters
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    z, labels = torch.randn(16, *LATENT), torch.arange(16) % 10
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    new, old = model.train().loss_terms(z, labels, g1), old_loss_terms(reference.train(), z, labels, g2)
    assert torch.equal(new.weighted_nats, old.weighted_nats) and torch.equal(g1.get_state(), g2.get_state())

    def no_text_encoder():
        raise AssertionError("text conditioning off must not touch the text encoder")
    monkeypatch.setattr("ul_pipeline.text.encoder.text_encoder_sha256", no_text_encoder)
    assert stage2_fields(cfg, open_store(captioned_store[1])) == ("z_clean", "labels")  # text features not read
    # committed results hash the resolved config: the new switch, off, is not part of it
    assert "text_conditioning" not in result_config(to_dict(cfg))["stage2"]
    assert result_config(to_dict(load_config("smoke", ["stage2.text_conditioning=cross"])))["stage2"][
        "text_conditioning"] == "cross"


class _OtherTextEncoder:
    """The installed encoder under another weights hash, with other features (as after a wheel update)."""

    def __init__(self, encoder: TextEncoder, sha256: str):
        self.encoder, self.sha256, self.name, self.dim = encoder, sha256, encoder.name, encoder.dim

    def num_tokens(self, captions):
        return self.encoder.num_tokens(captions)

    def encode(self, captions, length=None):
        f = self.encoder.encode(captions, length)
        f.pooled, f.token_states = -f.pooled, -f.token_states
        return f


@pytest.mark.parametrize("finished", [True, False])
def test_a_text_run_never_continues_on_another_text_encoders_features(captioned_store, tmp_path, monkeypatch,
                                                                      finished):
    import shutil

    from ul_pipeline import lifecycle
    from ul_pipeline.train.checkpoint import load_checkpoint

    shards, url, _, encoder = captioned_store
    store_url = str(tmp_path / "latents.zarr")
    shutil.copytree(url, store_url)
    overrides = ["stage2.text_conditioning=pooled", "stage1.logsnr_0=5.0", "stage2.train.batch_size=8",
                 "stage2.train.total_samples=16", "stage2.train.checkpoint_every_samples=16", "compute.tensorboard=false"]
    run = tmp_path / "stage2"
    lifecycle.run_stage2(load_config("smoke", overrides), store_url, run)
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["text_encoder_sha256"] == encoder.sha256
    if not finished:  # as if interrupted
        ckpt["complete"] = False
        torch.save(ckpt, run / "last.pt")
    other = "b" * 64  # the text encoder changes; the store gets its features beside the old ones
    ensure_text_features(store_url, shards, _OtherTextEncoder(encoder, other))
    monkeypatch.setattr("ul_pipeline.text.encoder.text_encoder_sha256", lambda folder=None: other)
    monkeypatch.setattr(lifecycle, "text_encoder_sha256", lambda folder=None: other)
    longer = load_config("smoke", [*overrides[:-2], "stage2.train.total_samples=32", "compute.tensorboard=false"])
    choice = lifecycle.stage2_run(longer, open_store(store_url), run)
    assert choice.run_dir != run and any("text_encoder_sha256" in r for r in choice.reasons)
    result = lifecycle.run_stage2(longer, store_url, run)
    assert Path(result.checkpoint).parent == choice.run_dir
    assert load_checkpoint(result.checkpoint)["text_encoder_sha256"] == other
    kept = load_checkpoint(run / "last.pt")  # the old encoder's run is left as it was
    assert kept["text_encoder_sha256"] == encoder.sha256 and kept["samples_seen"] == 16
