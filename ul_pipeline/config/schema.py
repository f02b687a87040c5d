"""The config schema: structured dataclasses per component, and config hashes (validation: validation.py).

Every hyper-parameter lives here exactly once, with its meaning and units. YAML files under
`configs/` only change values; an unknown key or a wrong type fails with a `ConfigError` that names
the key and the file it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ul_pipeline.config.locations import CONFIG_DIR  # noqa: F401  (where experiments are read from)

DATA_SOURCES = ("fashion_mnist", "fashion_mnist_captions", "emoji", "image_folder", "shards", "moving_fashion_mnist",
                "video_folder")
VIDEO_SOURCES = ("moving_fashion_mnist", "video_folder")


def sample_shape(data: Any) -> tuple[int, ...]:
    """Shape of one sample from the `data` config: (C, H, W) for images, (C, T, H, W) for clips."""
    t = (int(data.frames),) if data.frames else ()
    return (int(data.channels), *t, int(data.resolution), int(data.resolution))


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range; the message names it."""


@dataclass
class DataConfig:
    source: str = "fashion_mnist"  # fashion_mnist | fashion_mnist_captions | emoji | image_folder | shards |
    # moving_fashion_mnist | video_folder (captioned sources: docs/guides/text-to-image.md; they write `<key>.txt`)
    uri: Optional[str] = None  # source location (fsspec URL); None = the embedded Debian dataset
    resolution: int = 32  # images are padded/resized to resolution x resolution pixels
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    num_classes: int = 10  # labels are ints in [0, num_classes); 0 = unconditional (all labels 0, no guidance)
    val_size: int = 1000  # held-out samples taken (deterministically) from the source
    limit: Optional[int] = None  # use at most this many source samples (None = all)
    shard_size: int = 2000  # samples per WebDataset tar shard
    seed: int = 0  # seed of the train/validation split
    in_memory: bool = True  # both stages load their train data into RAM (shards' train split, the latent store);
    # false streams it from local or S3 storage (shards / store blocks shuffled per epoch, split over ranks and
    # workers). Explicit, not by size: streaming sees other batches, so it is another run (docs/guides/scale-out.md)
    shuffle_buffer: int = 2000  # streaming shuffle window, in samples (whole shards or store blocks, at least one)
    frames: int = 0  # clip length in frames; 0 = still images, > 0 = video samples (C, T, H, W)
    fps: float = 8.0  # video_folder: clips are resampled to this frame rate (frames per second)
    background: str = "white"  # image_folder: colour transparent pixels are composited on (a name or #rrggbb)
    hflip: bool = False  # random left-right flips: Stage 1 mirrors each image w.p. 1/2; the latent store
    # keeps z_clean of image and mirror (z_clean_hflip), Stage 2 picks one per draw (no mirror frozen in the cache).
    # Off by default (the demo's numbers are without it); not combined with stage1.encoder_noise: learned


@dataclass
class TrainConfig:
    batch_size: int = 64  # examples per optimiser step: the global batch, shared equally by all torchrun ranks
    total_samples: int = 100_000  # training length, in samples seen
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # AdamW betas
    warmup_samples: int = 5_000  # linear learning-rate warm-up, in samples seen
    cooldown_samples: int = 0  # linear decay of the learning rate to 0 over the last this many samples
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    ema_decay: float = 0.999  # EMA of weights per step (0 = off)
    checkpoint_every_samples: int = 10_000  # write last.pt every this many samples seen
    log_every_samples: int = 1_000  # emit metrics every this many samples seen
    seed: int = 0  # seeds derive from (seed, rank, samples_seen)


@dataclass
class Stage1Config:
    preset: str = "small"  # network preset name (see ul_pipeline.nets.presets)
    latent_channels: Optional[int] = None  # None = the preset's latent channels
    logsnr_0: float = 5.0  # eq. 2: encoder noise level lambda(0); the paper fixes 5
    prior_logsnr_min: float = -15.0  # prior schedule end point lambda_min (nats-level)
    decoder_logsnr_min: float = -10.0  # decoder schedule, before the resolution shift
    decoder_logsnr_max: float = 10.0  # decoder schedule's other end, before the resolution shift
    decoder_shift: bool = True  # add 2 log(64/d) to the decoder's schedule (simple diffusion)
    c_lf: float = 1.5  # decoder loss factor; higher puts more bits in the latent
    bias: float = 0.0  # b in the decoder's sigmoid(b - lambda) weighting
    encoder_hold_samples: int = 0  # encoder lr is 0 this long, then warms up (0 = paper; docs/results/demo.md)

    # ablation switches (docs/concepts/method.md, ablations); the defaults are the paper's UL
    prior: str = "diffusion"  # diffusion (UL) | normal: fixed N(0, I) prior on z0, L_z = KL in closed form
    decoder_loss: str = "diffusion"  # diffusion (UL) | mse: deterministic x_hat = D(z0), squared error
    encoder_noise: str = "fixed"  # fixed (UL: sigma0 from logsnr_0) | learned: encoder predicts extra variance
    mse_sigma: float = 0.2  # mse decoder: L_x = c_lf ||x - x_hat||^2 / (2 mse_sigma^2), pixels in [-1, 1]
    latent_weight: float = 1.0  # beta on L_z in the training loss (UL: 1; the KL-VAE baseline: small)
    target_bits_per_pixel: float = 0.0  # > 0: steer beta during training so L_z tracks this rate (rate-matched
    # baselines; stage1/rate.py); latent_weight is then beta's starting value. 0 = beta fixed
    rate_gain: float = 0.02  # rate controller: change of log(beta) per step per unit of rate error (pi: tested at 0.05)
    rate_control: str = "integral"  # integral (the study's) | pi: PI law without its transient (stage1/rate.py)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class Stage2Config:
    preset: str = "small"  # base-model preset name
    bias: float = 0.0  # b in the base model's sigmoid(b - lambda) weighting
    logsnr_min: float = -15.0  # base-model schedule start; its end is tied to stage1.logsnr_0
    label_dropout: float = 0.1  # probability a label (text models: the caption) is replaced by the null (for CFG)
    context_frames: int = 0  # video: first frames given as context (whole groups of the time patch); 0 = none.
    # The latent store then also keeps their encoding as sampling gives it (z_clean_context)
    context_dropout: float = 0.1  # video: probability the context is withheld; one uniform per clip drives this and
    # label_dropout, so both go together (the guidance branch) with probability min(label_dropout, context_dropout)
    text_conditioning: str = "none"  # none | pooled: the caption's pooled text vector into the adaLN embedding |
    # cross: that plus zero-initialised, masked cross-attention to its token states in every block (text-to-image:
    # docs/guides/text-to-image.md); captions' features come from the latent store, label_dropout drops them to a
    # learned null caption
    standardize: bool = False  # train on (z - the store's latent_shift) / latent_scale (per-channel mean, one
    # scale over all training latents), undone exactly before decoding: for KL-regularised latents, as
    # Stable Diffusion's scale_by_std. UL keeps its own scale (its prior priced it). Images only
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class EncodeConfig:
    dtype: str = "float32"  # z_clean storage dtype: float32 | float16
    block_size: int = 1024  # samples per Zarr chunk and per resumable extraction block
    batch_size: int = 256  # encoder batch size during extraction


@dataclass
class SampleConfig:
    steps: int = 100  # base-model ancestral steps from lambda_min down to lambda(0)
    decoder_steps: int = 100  # decoder ancestral steps
    guidance: float = 0.0  # classifier-free guidance weight w (0 = conditional, no guidance)
    guidance_interval: Optional[list[float]] = None  # [lo, hi]: guide only at base-model log-SNRs in it, the
    # conditional prediction elsewhere (a limited interval, Kynkaanniemi et al. 2024); null: every step (the paper's)
    eta: float = 1.0  # base-model sampler noise: 1 ancestral, 0 deterministic DDIM, between: DDIM's eta
    decoder_eta: float = 1.0  # the same for the decoder's sampler
    decoder_clip: bool = True  # clamp the decoder's x_hat to [-1, 1] at every step (the paper's) | only the image
    reconstruction_draws: int = 1  # reconstructions: 1 = one decoder sample (the paper's); K: the mean of K (E[x | z0])
    batch_size: int = 256  # samples per sampler batch (evaluation and the sample command)


@dataclass
class EvalConfig:
    num_samples: int = 1000  # images for PSNR/rFID and samples for gFID
    num_generated: int = 0  # samples generated for KID (and stored as Inception features); 0 = num_samples.
    # gFID uses the first num_samples of them against the held-out images
    kid_reference_size: int = 0  # > 0: KID +- SE against the features of this many training images (cached)
    cross_fid: bool = False  # also the decoder's FID on reconstructions of other held-out images
    # (val[n:2n] against val[:n]): the gFID a perfect base model would get with this decoder
    fid: bool = True  # compute rFID/gFID/KID with the TF-Inception features
    psnr_floor: float = 15.0  # asset-check warning below this PSNR (dB)
    bits_per_pixel_band: list[float] = field(default_factory=lambda: [0.01, 2.0])  # check band
    grid_size: int = 64  # images in the reconstruction and sample grids


@dataclass
class ComputeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | fp32 | bf16
    workers: int = 0  # streaming DataLoader workers per rank (0 = read in the training process); a streamed
    # run resumes only with the same workers and world size
    deterministic: bool = False  # torch deterministic algorithms (for exact resume checks)

    # data parallelism (torchrun; ul_pipeline.distributed). train.batch_size stays the global batch.
    nproc_per_node: int = 1  # processes per machine (GPUs per node); >1 Dagster launches torchrun through Pipes
    nnodes: int = 1  # machines in the torchrun group
    rdzv_backend: str = "c10d"  # torchrun rendezvous backend
    rdzv_endpoint: str = "localhost:29400"  # host:port of the rendezvous (the head node on a cluster)
    rdzv_id: str = "ul"  # rendezvous job id, the same on every machine of one run
    dist_timeout_s: float = 600.0  # gloo/NCCL collective timeout: a hung rank fails the group after this
    max_restarts: int = 0  # torchrun --max-restarts: restart a failed group, which resumes from last.pt
    compile: bool = False  # torch.compile the training loss computation

    # opt-in fast training path (benchmarks/profile_nets.py): attention trained in bf16 on CPU runs the fp32
    # SDPA kernel (bf16's backward is 5-10x slower at these few tokens) and AdamW is fused. Same math and
    # weights layout (checkpoints load either way), rounded differently; false = the reference, bit for bit
    fast_transformer: bool = False
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (no effect on CPU)
    tensorboard: bool = True  # live curves (and a picture per checkpoint) in <run folder>/tensorboard


@dataclass
class ExperimentConfig:
    name: str = "default"  # the experiment's name: its file's stem or sweep point key unless the file sets it
    latent_store_of: Optional[str] = None  # reuse this experiment's Stage 1 + latent store
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)


def _merge_one(cfg: DictConfig, other: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
        first_line = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{origin}: bad config key '{key}': {first_line}") from None


def to_yaml(cfg: DictConfig) -> str:
    """The config as `to_dict` writes it, in YAML (metadata, `python -m ul_pipeline config`)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def to_dict(cfg: DictConfig) -> dict:
    """The config for the record (checkpoints, stores, job files, metadata): resolved, except values
    read from the environment, which keep their `${oc.env:NAME}` text (directly or through another
    key), so a secret never lands on disk; `from_dict` reads them again where the config is loaded."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    recorded = _env_as_text(raw)
    if recorded == raw:  # nothing from the environment
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return OmegaConf.to_container(OmegaConf.create(recorded), resolve=True)  # type: ignore[return-value]


_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_UNESCAPED = re.compile(r"(?<!\\)\$\{")


def _env_as_text(node: Any) -> Any:
    """The unresolved config with each string that reads `oc.env` escaped: it resolves to its own text."""
    if isinstance(node, dict):
        return {k: _env_as_text(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_env_as_text(v) for v in node]
    if isinstance(node, str) and _ENV.search(node):
        return _UNESCAPED.sub(lambda m: "\\${", node)
    return node


def config_hash(d: dict | DictConfig) -> str:
    """sha256 of a config's canonical JSON, a short identity for artifacts."""
    if isinstance(d, DictConfig):
        d = to_dict(d)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

