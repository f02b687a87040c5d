"""The text-image agreement model: a small dual encoder trained contrastively (CLIP-style InfoNCE) on a train split.

No CLIP weights exist offline, so agreement is measured by our own model: a small CNN maps an image,
and a small MLP maps the frozen text encoder's pooled sentence vector, into one joint space (unit
vectors); the symmetric InfoNCE loss of CLIP (Radford et al. 2021, fig. 3) pulls each image towards
its own caption and away from the other captions of the batch. Captions that occur more than once
(Fashion-MNIST's ten templates) are all positives of each other's images (soft targets), so a
repeated caption is never pushed away from its own images.

Augmentation is a random shift of up to `shift_pixels` (edge-replicated): no flips (emoji have a
direction) and nothing that touches colour (colour is what skin tones are about). Everything is
seeded by `seed` alone: initialisation, batch order and shifts (deterministic on a fixed thread count).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AgreementConfig:
    """Hyper-parameters of the agreement model (all part of its cache key)."""

    embed_dim: int = 128  # joint space dimension
    width: int = 16  # CNN channels at full resolution; doubled at each of the 3 stride-2 stages (capped at 4x)
    text_hidden: int = 512  # hidden units of the text MLP
    epochs: int = 30  # passes over the train split
    batch_size: int = 256  # pairs per InfoNCE batch (the negatives of each pair: the batch's other captions)
    lr: float = 2e-3  # AdamW peak learning rate, cosine decay to 0 after a 1-epoch linear warm-up
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    shift_pixels: int = 2  # random translation augmentation, in pixels (0 = off)
    init_temperature: float = 0.07  # CLIP's initial softmax temperature; learned, logit scale capped at 100

    def to_dict(self) -> dict:
        return asdict(self)


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.GELU())


class ImageTower(nn.Module):
    """Image (B, C, H, W) in [-1, 1] -> joint-space unit vector (B, embed_dim); global mean-pooled CNN."""

    def __init__(self, channels: int, width: int, embed_dim: int):
        super().__init__()
        w = [width, 2 * width, 4 * width, 4 * width]
        self.net = nn.Sequential(conv_block(channels, w[0], 1), conv_block(w[0], w[1], 2), conv_block(w[1], w[1], 1),
                                 conv_block(w[1], w[2], 2), conv_block(w[2], w[2], 1), conv_block(w[2], w[3], 2))
        self.head = nn.Linear(2 * w[3], embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (B, 4w, H/8, W/8)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)  # (B, 8w): mean and max pooling
        return F.normalize(self.head(h), dim=1)


class TextTower(nn.Module):
    """Pooled sentence vector (B, D) -> joint-space unit vector (B, embed_dim).

    The input is standardised with the train split's mean and std per feature first: the pooled
    vectors of captions that differ in one modifier are close (light/dark "thumbs up sign": cosine
    0.948), and removing what all captions share makes those differences the larger part of the input.
    """

    def __init__(self, text_dim: int, hidden: int, embed_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(text_dim))
        self.register_buffer("std", torch.ones(text_dim))
        self.net = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net((pooled - self.mean) / self.std), dim=1)


class AgreementModel(nn.Module):
    """The dual encoder: `image_embed`, `text_embed` (unit vectors) and a learned logit scale."""

    def __init__(self, channels: int, text_dim: int, config: AgreementConfig):
        super().__init__()
        self.channels, self.text_dim, self.config = channels, text_dim, config
        self.image = ImageTower(channels, config.width, config.embed_dim)
        self.text = TextTower(text_dim, config.text_hidden, config.embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def image_embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images)

    def text_embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.text(pooled)

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B_img, B_txt) scaled cosine similarities."""
        return self.log_scale.clamp(max=math.log(100.0)).exp() * image_emb @ text_emb.T


def info_nce(logits: torch.Tensor, same_caption: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): mean of image->text and text->image cross-entropies; `same_caption`
    (B, B) bool marks every positive pair (the diagonal and repeated captions), targets spread over them."""
    targets = same_caption.float() / same_caption.float().sum(1, keepdim=True)  # (B, B), rows sum to 1
    image_to_text = -(targets * logits.log_softmax(1)).sum(1).mean()
    text_to_image = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by its own integer offset in [-pixels, pixels]^2, edges replicated."""
    if pixels == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")  # (B, C, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(-1, images.shape[1], -1, w + 2 * pixels)
    shifted = padded.gather(2, rows)  # (B, C, H, W + 2p)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(-1, images.shape[1], h, -1)
    return shifted.gather(3, cols)  # (B, C, H, W)


def train_agreement_model(images: torch.Tensor, pooled: torch.Tensor, seed: int,
                          config: AgreementConfig) -> AgreementModel:
    """A fresh `AgreementModel` trained on (images (N, C, H, W) in [-1, 1], pooled (N, D)), seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed, the caller's global RNG untouched
        torch.manual_seed(seed)
        model = AgreementModel(images.shape[1], pooled.shape[1], config)
    model.text.mean.copy_(pooled.mean(0))
    model.text.std.copy_(pooled.std(0).clamp(min=1e-6))
    # a caption id per row (equal pooled vectors = the same caption) to mark the positives of each batch
    _, caption_id = torch.unique(pooled, dim=0, return_inverse=True)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    model.train()
    with torch.enable_grad():  # also when called from evaluation, which runs under no_grad
        _train_epochs(model, opt, images, pooled, caption_id, gen, config)
    return model.eval().requires_grad_(False)


def _train_epochs(model: AgreementModel, opt: torch.optim.Optimizer, images: torch.Tensor, pooled: torch.Tensor,
                  caption_id: torch.Tensor, gen: torch.Generator, config: AgreementConfig) -> None:
    """`config.epochs` epochs of InfoNCE, linear warm-up over the first epoch then cosine decay."""
    n = len(images)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # the ragged last batch is dropped (a new order each epoch)
    total, warmup = config.epochs * steps_per_epoch, steps_per_epoch
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, steps_per_epoch * batch, batch):
            idx = order[lo:lo + batch]
            lr = config.lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / total)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = random_shift(images[idx], config.shift_pixels, gen)
            logits = model.logits(model.image_embed(x), model.text_embed(pooled[idx]))
            loss = info_nce(logits, caption_id[idx][:, None] == caption_id[idx][None, :])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
