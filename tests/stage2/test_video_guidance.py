"""Video guidance: in a guided sampling step the network's two halves get what training gave them.

The conditional half reads the clean context in its context frames; the subtracted half (null label,
no context) must read what a clip whose context was dropped read in training: every frame, frame 0
included, at the step's noise level, no clean context, an all-False context mask.
"""

import pytest
import torch
from torch import nn

from ul_pipeline.diffusion import alpha_sigma
from ul_pipeline.stage2.frame_conditioned import FrameConditionedBaseModel

LATENT = (4, 3, 4, 4)  # (C, t, h, w): latent frame 0 is context, 1..2 are generated
NULL = 10


class InputRecorder(nn.Module):
    """A stand-in denoiser that keeps every input it gets (z, logsnr, labels, context mask) and predicts v = 0."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, logsnr, labels, mask):
        self.calls.append((x.clone(), logsnr.clone(), labels.clone(), mask.clone()))
        return torch.zeros_like(x)


def frame0_residual(x: torch.Tensor, logsnr: torch.Tensor, z_clean: torch.Tensor) -> torch.Tensor:
    """(x[:, :, 0] - alpha_t z_clean[:, :, 0]) / sigma_t: a standard normal independent of z_clean exactly
    when frame 0 is the clip's frame 0 noised at the input's level."""
    alpha, sigma = alpha_sigma(logsnr.reshape(-1, 1, 1, 1))
    return (x[:, :, 0] - alpha * z_clean[:, :, 0]) / sigma


def assert_noised_at_level(x, logsnr, z_clean, what):
    r = frame0_residual(x, logsnr, z_clean).flatten()
    c = z_clean[:, :, 0].flatten()
    corr = torch.corrcoef(torch.stack([r, c]))[0, 1].item()
    assert abs(r.mean().item()) < 0.05 and abs(r.std().item() - 1.0) < 0.05, f"{what}: {r.mean():.3f} {r.std():.3f}"
    assert abs(corr) < 0.05, f"{what}: frame 0 carries the clean context (corr {corr:.3f} with it)"


def model(net):
    return FrameConditionedBaseModel(net, LATENT, NULL, context_latents=1, label_dropout=1.0, context_dropout=1.0)


def test_guided_step_subtracts_the_branch_training_gave_a_dropped_clip():
    n = 256
    g = torch.Generator().manual_seed(0)
    z_clean = torch.randn(n, *LATENT, generator=g)
    labels = torch.randint(0, NULL, (n,), generator=g)

    # training, every clip dropped (both dropouts 1): what the network saw for the guidance branch
    net = InputRecorder()
    base = model(net).train()
    base.loss_terms(z_clean, labels, generator=g, context_z_clean=z_clean)
    (x_tr, lam_tr, labels_tr, mask_tr), = net.calls
    assert (labels_tr == NULL).all() and not mask_tr.any()
    assert_noised_at_level(x_tr, lam_tr, z_clean, "training's dropped clip")

    # sampling with the context z0 of the same clips, guidance 1 (v = 2 v_cond - v_uncond)
    net.calls.clear()
    alpha0, sigma0 = alpha_sigma(torch.tensor(base.schedule.logsnr_max))
    ctx = alpha0 * z_clean[:, :, :1] + sigma0 * torch.randn(n, LATENT[0], 1, *LATENT[2:], generator=g)
    base.eval().sample_z0(labels, steps=4, guidance=1.0, generator=g, context_z0=ctx)
    assert len(net.calls) == 4
    for x, lam, lab, mask in net.calls:
        (x_c, x_u), (lam_c, lam_u), (lab_c, lab_u), (mask_c, mask_u) = (t.chunk(2) for t in (x, lam, lab, mask))
        # conditional half: the clean context, the labels, frame 0 marked as context
        assert torch.equal(x_c[:, :, :1], ctx) and torch.equal(lab_c, labels)
        assert mask_c[:, 0].all() and not mask_c[:, 1:].any()
        # unconditional half: what the dropped clip got: null label, no context mask, same level everywhere,
        # the generated frames the same z_t as the conditional half, frame 0 noised at that level
        assert (lab_u == NULL).all() and not mask_u.any() and torch.equal(lam_u, lam_c)
        assert torch.equal(x_u[:, :, 1:], x_c[:, :, 1:])
        assert not torch.allclose(x_u[:, :, :1], ctx)
        assert_noised_at_level(x_u, lam_u, z_clean, f"guidance branch at log-SNR {lam_u[0]:.2f}")


@pytest.mark.parametrize("with_context", [True, False])
def test_paths_without_the_subtracted_branch_or_context_are_unchanged(with_context):
    """Guidance 0 calls the conditional half alone (the context as given); without context the two halves
    read the same z, as before the guidance branch learned about context."""
    labels = torch.tensor([1, 2, 3])
    ctx = torch.randn(3, LATENT[0], 1, *LATENT[2:]) if with_context else None
    net = InputRecorder()
    model(net).eval().sample_z0(labels, steps=3, guidance=0.0, generator=torch.Generator().manual_seed(0),
                                context_z0=ctx)
    assert len(net.calls) == 3
    for x, _, lab, mask in net.calls:
        assert x.shape[0] == 3 and torch.equal(lab, labels) and mask[:, 0].all() == with_context
        if with_context:
            assert torch.equal(x[:, :, :1], ctx)
    if not with_context:
        net.calls.clear()
        model(net).eval().sample_z0(labels, steps=3, guidance=2.0, generator=torch.Generator().manual_seed(0))
        for x, _, _, mask in net.calls:
            x_c, x_u = x.chunk(2)
            assert torch.equal(x_c, x_u) and not mask.any()


def test_a_guidance_interval_evaluates_only_the_conditional_half_outside_it():
    n = 8
    g = torch.Generator().manual_seed(0)
    z_clean, labels = torch.randn(n, *LATENT, generator=g), torch.randint(0, NULL, (n,), generator=g)
    net = InputRecorder()
    base = model(net).eval()
    base.sample_z0(labels, steps=8, guidance=1.0, generator=g, context_z0=z_clean[:, :, :1], guidance_interval=(-3.0, 5.0))
    levels = [(float(lam[0]), len(x)) for x, lam, _, _ in net.calls]
    assert len(levels) == 8 and any(lam < -3.0 for lam, _ in levels) and any(lam >= -3.0 for lam, _ in levels)
    for lam, batch in levels:
        assert batch == (2 * n if -3.0 <= lam <= 5.0 else n), (lam, batch)
