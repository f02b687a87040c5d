"""Stage 1: units of the two terms, training on real images, c_lf vs bitrate, exact resume."""

import math

import pytest
import torch
from torch import nn

from ul_pipeline.config import load_config
from ul_pipeline.diffusion import Schedule
from ul_pipeline.evaluation.metrics import to_float
from ul_pipeline.stage1 import DiffusionDecoder, DiffusionPrior, UnifiedLatents
from ul_pipeline.train.checkpoint import CheckpointError
from ul_pipeline.train.loop import Callback
from ul_pipeline.stage1.training import encoder_hold, load_stage1, train_stage1


def padded_images(fmnist_400) -> torch.Tensor:
    """uint8 (400, 1, 32, 32): Fashion-MNIST padded from 28 to 32 pixels."""
    images, _ = fmnist_400
    return torch.nn.functional.pad(torch.from_numpy(images).unsqueeze(1), (2, 2, 2, 2))


class ZeroEncoder(nn.Module):
    def __init__(self, latent_shape):
        super().__init__()
        self.latent_shape = latent_shape
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.zeros(x.shape[0], *self.latent_shape) + self.dummy


def zero_prior(z_t, logsnr):
    return torch.zeros_like(z_t)


def zero_decoder(x_t, logsnr, z0):
    return torch.zeros_like(x_t)


def stub_model(resolution: int, latent_channels: int) -> UnifiedLatents:
    image_shape = (1, resolution, resolution)
    return UnifiedLatents(ZeroEncoder((latent_channels, 4, 4)), DiffusionPrior(zero_prior, -15.0, 5.0),
                          DiffusionDecoder(zero_decoder, image_shape, Schedule(-10, 10), c_lf=1.5, bias=0.0),
                          image_shape)


def test_latent_and_decoder_terms_are_sums_over_their_own_dimensions():
    """Must-show 3: with fixed predictors, each term grows linearly with its own number of dims.

    Averaging L_x over pixels (or L_z over latent dims) makes its ratio 1 instead of 4, and fails.
    """
    g = torch.Generator().manual_seed(0)
    terms = {}
    for res, ch in [(16, 2), (32, 8)]:
        model = stub_model(res, ch)
        x = torch.zeros(20_000, 1, res, res)
        terms[res] = model.loss_terms(x, generator=g)
    lx_ratio = terms[32].decoder_nats.mean() / terms[16].decoder_nats.mean()
    lz_ratio = terms[32].prior_diffusion_nats.mean() / terms[16].prior_diffusion_nats.mean()
    assert lx_ratio.item() == pytest.approx(4.0, rel=0.05)
    assert lz_ratio.item() == pytest.approx(4.0, rel=0.05)
    # and the two live on one scale: per-dimension nats of L_x match their closed form
    # E[1/2 c_lf w (-dl/dt) alpha^4] per pixel (x = 0, eps_hat = sigma x_t = sigma^2 eps)
    sched, t = Schedule(-10, 10), torch.linspace(0, 1, 200_001, dtype=torch.float64)[1:-1]
    lam = sched.logsnr(t)
    integrand = 0.5 * 1.5 * torch.sigmoid(-lam) * sched.neg_dlogsnr_dt(t) * torch.sigmoid(lam) ** 2
    per_pixel = terms[32].decoder_nats.mean().item() / 1024
    assert per_pixel == pytest.approx(integrand.mean().item(), rel=0.03)


def test_both_terms_send_gradients_to_the_encoder():
    torch.manual_seed(0)
    cfg = load_config("smoke")
    model = UnifiedLatents.from_config(cfg)
    with torch.no_grad():  # leave the zero-initialised output layers
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    for name in ("latent_nats", "decoder_nats"):
        model.zero_grad()
        getattr(model.loss_terms(x), name).sum().backward()
        grad = sum(p.grad.abs().sum() for p in model.encoder.parameters() if p.grad is not None)
        assert grad > 0, f"{name} sends no gradient to the encoder"


def heldout_bits_per_pixel(model: UnifiedLatents, x: torch.Tensor) -> float:
    g = torch.Generator().manual_seed(123)  # common random numbers across the compared models
    return (model.latent_nats(x, repeats=8, generator=g).mean().item() / math.log(2)) / 1024


def test_training_tiny_lowers_both_terms_and_bits_rise_with_c_lf(fmnist_400, tmp_path):
    """Must-show 4: on real Fashion-MNIST images, at equal budget."""
    images = padded_images(fmnist_400)
    train, heldout = images[:300], to_float(images[300:])
    bits = {}
    for c_lf in (1.25, 2.5, 5.0):
        cfg = load_config("smoke", [f"stage1.c_lf={c_lf}", "stage1.train.total_samples=3200",
                                    "stage1.train.log_every_samples=320"])
        result = train_stage1(cfg, train, tmp_path / f"c{c_lf}")
        first, last = result.history[0], result.history[-1]
        assert last["latent_nats"] < 0.5 * first["latent_nats"], (c_lf, first, last)
        assert last["decoder_nats"] < 0.8 * first["decoder_nats"], (c_lf, first, last)
        bits[c_lf] = heldout_bits_per_pixel(result.ema_model, heldout)
    values = [bits[c] for c in sorted(bits)]
    assert values[0] < values[1] < values[2], bits


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, state, path):
        if state.step == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {state.step}")


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_interrupted_run_resumes_to_identical_weights(fmnist_400, tmp_path, deterministic):
    """Must-show 5: kill after 3 of 6 steps, re-run the same command, compare every tensor."""
    images = padded_images(fmnist_400)[:128]
    overrides = ["stage1.train.batch_size=16", "stage1.train.total_samples=96",
                 "stage1.train.checkpoint_every_samples=16", "compute.deterministic=true"]
    cfg = load_config("smoke", overrides)
    full = train_stage1(cfg, images, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train_stage1(cfg, images, tmp_path / "resumed", callbacks=[StopAt(3)])
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["step"] == 3
    resumed = train_stage1(cfg, images, tmp_path / "resumed")
    assert resumed.state.step == full.state.step == 6
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(full.ema_model.state_dict().items(), resumed.ema_model.state_dict().items()):
        assert torch.equal(a, b), k
    # the log window cut by the kill averages fewer steps; the positions and the last window agree
    assert [h["samples_seen"] for h in resumed.history] == [h["samples_seen"] for h in full.history]
    assert resumed.history[-1]["loss_nats"] == full.history[-1]["loss_nats"]

    # a mismatched config is refused, naming the key; the checkpoint is left as it was
    changed = load_config("smoke", overrides + ["stage1.c_lf=2.0"])
    with pytest.raises(CheckpointError, match=r"stage1\.c_lf"):
        train_stage1(changed, images, tmp_path / "resumed")
    model, stored_cfg, meta = load_stage1(tmp_path / "resumed" / "last.pt")
    assert stored_cfg.stage1.c_lf == 1.5 and meta["complete"] and len(meta["sha256"]) == 64
    for (k, a), (_, b) in zip(full.ema_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        load_stage1(bad)


def test_wrong_image_shape_fails_before_compute(tmp_path):
    cfg = load_config("smoke")
    with pytest.raises(ValueError, match="data.channels"):
        train_stage1(cfg, torch.zeros(8, 3, 32, 32, dtype=torch.uint8), tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_encoder_hold_factor_is_zero_then_ramps_to_one():
    factor = encoder_hold(hold_samples=100, warmup_samples=50)
    assert [factor(s) for s in (0, 99, 100, 125, 150, 10_000)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


class Snapshot(Callback):
    """Copies of the raw weights after every step."""

    def __init__(self, model_ref):
        self.model_ref, self.states = model_ref, []

    def on_step(self, state, loss):
        self.states.append({k: v.detach().clone() for k, v in self.model_ref[0].state_dict().items()})


def test_encoder_hold_freezes_only_the_encoder_then_releases_it(fmnist_400, tmp_path, monkeypatch):
    """stage1.encoder_hold_samples: prior and decoder learn from step 1, the encoder after the hold."""
    images = padded_images(fmnist_400)[:128]
    cfg = load_config("smoke", ["stage1.train.batch_size=16", "stage1.train.total_samples=96",
                                "stage1.train.warmup_samples=16", "stage1.encoder_hold_samples=48"])
    built = []
    original = UnifiedLatents.from_config.__func__
    monkeypatch.setattr(UnifiedLatents, "from_config",
                        classmethod(lambda cls, c: built.append(original(cls, c)) or built[-1]))
    snap = Snapshot(built)
    initial = {}

    class First(Callback):
        def on_start(self, state, total):
            initial.update({k: v.detach().clone() for k, v in built[0].state_dict().items()})

    result = train_stage1(cfg, images, tmp_path / "run", callbacks=[First(), snap])
    assert len(snap.states) == 6
    moved = lambda a, b, prefix: any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))
    for step in range(3):  # 48 samples = 3 steps of 16: only prior and decoder move
        assert not moved(initial, snap.states[step], "encoder."), step
        assert moved(initial, snap.states[step], "prior.") and moved(initial, snap.states[step], "decoder.")
    assert moved(snap.states[2], snap.states[3], "encoder.")  # released: lr factor 16/16 = 1
    assert [h.get("lr_encoder") for h in result.history][-1] == pytest.approx(cfg.stage1.train.lr)
