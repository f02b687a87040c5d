"""Frame-conditioned Stage 2: context latents stay fixed, only generated frames are trained, CFG and
unconditional sampling work, and the context-frame mapping refuses partial latent frames."""

import math

import pytest
import torch
from torch import nn

from ul_pipeline.config import load_config
from ul_pipeline.stage2.frame_conditioned import context_latent_frames, FrameConditionedBaseModel
from ul_pipeline.stage2.build import build_stage2_model

LATENT = (4, 2, 4, 4)  # video_tiny on 8x16x16 clips


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def video_cfg(**stage2):
    overrides = {"data": {"source": "moving_fashion_mnist", "frames": 8, "resolution": 16},
                 "stage1": {"preset": "video_tiny"}, "stage2": {"preset": "video_tiny", **stage2}}
    return load_config(None, overrides)


def model_with_random_heads():
    model = build_stage2_model(video_cfg(context_frames=4), LATENT)
    with torch.no_grad():  # zero-initialised heads would make every output 0 and every test vacuous
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model.eval()


def test_context_frames_map_onto_whole_latent_frames():
    assert context_latent_frames(4, 16, 4) == 1 and context_latent_frames(8, 16, 4) == 2
    with pytest.raises(ValueError, match="multiple of 4"):
        context_latent_frames(5, 16, 4)  # the paper's 5 would split latent frame 1
    with pytest.raises(ValueError, match="multiple of 4"):
        context_latent_frames(16, 16, 4)  # nothing left to generate
    model = build_stage2_model(video_cfg(context_frames=4), LATENT)
    assert isinstance(model, FrameConditionedBaseModel) and model.context_latents == 1
    assert not isinstance(build_stage2_model(video_cfg(), LATENT), FrameConditionedBaseModel)


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_sampler_keeps_the_given_context_fixed_and_continues_it(guidance):
    model = model_with_random_heads()
    labels = torch.tensor([1, 2, 3])
    ctx = torch.randn(3, 4, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    z = model.sample_z0(labels, steps=4, guidance=guidance, generator=g, context_z0=ctx)
    assert z.shape == (3, *LATENT)
    assert torch.equal(z[:, :, :1], ctx)  # context frames returned exactly as given
    assert torch.isfinite(z).all() and z[:, :, 1:].std() > 0.1
    # the continuation depends on the context: same noise, other context -> other frames 1..t
    z_other = model.sample_z0(labels, steps=4, guidance=guidance, generator=torch.Generator().manual_seed(0),
                              context_z0=ctx + 1.0)
    assert not torch.allclose(z[:, :, 1:], z_other[:, :, 1:], atol=1e-4)
    with pytest.raises(ValueError, match="context_z0"):
        model.sample_z0(labels, steps=2, context_z0=torch.randn(3, 4, 2, 4, 4))


def test_unconditional_sampling_works_without_context():
    model = model_with_random_heads()
    z = model.sample_z0(torch.tensor([0, 10]), steps=3, guidance=0.5, generator=torch.Generator().manual_seed(1))
    assert z.shape == (2, *LATENT) and torch.isfinite(z).all()


def test_loss_counts_only_generated_frames():
    """Changing the context frames' targets changes nothing but the network input; frames 1..t cost."""
    model = model_with_random_heads()
    model.context_dropout = 0.0
    z = torch.randn(4, *LATENT)
    t1 = model.loss_terms(z, torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    assert (t1.weighted_nats > 0).all()
    # with all frames as context there is nothing left to predict: the loss is exactly 0
    model.context_latents = LATENT[1]
    t_all = model.loss_terms(z, torch.zeros(4, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    assert torch.equal(t_all.weighted_nats, torch.zeros(4))


def test_training_step_reaches_the_context_embedding():
    model = model_with_random_heads().train()
    model.context_dropout = 0.0
    terms = model.loss_terms(torch.randn(4, *LATENT), torch.zeros(4, dtype=torch.long),
                             generator=torch.Generator().manual_seed(0))
    terms.weighted_nats.mean().backward()
    assert model.net.context_embed.grad is not None and model.net.context_embed.grad.abs().sum() > 0


class RecordingNet(nn.Module):
    """A stand-in denoiser that keeps what the base model feeds it (input, labels, context mask)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, logsnr, labels, mask):
        self.calls.append((x, labels, mask))
        return torch.zeros_like(x)


@pytest.mark.parametrize("label_dropout, context_dropout", [(0.1, 0.1), (0.1, 0.25), (0.2, 0.05)])
def test_guidance_branch_is_trained_at_the_configured_joint_rate(label_dropout, context_dropout):
    """Guidance subtracts v(no context, null label): measured over 20,000 training draws, the share of
    clips the network sees with both dropped is min(label_dropout, context_dropout) within 4 binomial
    standard errors (independent drops gave 0.01 at 0.1 / 0.1), and each alone has its excess."""
    net = RecordingNet()
    model = FrameConditionedBaseModel(net, LATENT, 10, context_latents=1, label_dropout=label_dropout,
                                      context_dropout=context_dropout).train()
    n = 20_000
    model.loss_terms(torch.randn(n, *LATENT), torch.randint(0, 10, (n,)), generator=torch.Generator().manual_seed(0))
    (_, labels, mask), = net.calls
    null_label, no_context = labels == 10, ~mask.any(1)
    assert mask[:, 1:].sum() == 0 and torch.equal(mask[:, 0], ~no_context)  # only latent frame 0 is context
    measured = {"joint": (null_label & no_context).float().mean().item(),
                "label only": (null_label & ~no_context).float().mean().item(),
                "context only": (~null_label & no_context).float().mean().item()}
    want = {"joint": min(label_dropout, context_dropout), "label only": max(0.0, label_dropout - context_dropout),
            "context only": max(0.0, context_dropout - label_dropout)}
    for kind, p in want.items():
        tolerance = 4 * math.sqrt(p * (1 - p) / n)  # 0 when p is 0: then not a single clip
        assert abs(measured[kind] - p) <= tolerance, f"{kind}: measured {measured[kind]:.4f}, configured {p}"

    net.calls.clear()  # evaluation mode drops nothing
    model.eval().loss_terms(torch.randn(64, *LATENT), torch.randint(0, 10, (64,)))
    (_, labels, mask), = net.calls
    assert (labels < 10).all() and mask[:, 0].all()
